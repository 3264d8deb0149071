//! In-process request/response for queries.

use std::{
    any::{type_name, Any, TypeId},
    collections::HashMap,
    sync::Arc,
};

use crate::{bus::BoxFuture, Query, QueryError, QueryHandler, RegistrationError};

type DynQuery<Q> =
    Arc<dyn Fn(Q) -> BoxFuture<'static, Result<<Q as Query>::Output, QueryError>> + Send + Sync>;

/// Collects query handlers; [`QueryBusBuilder::build`] refuses duplicates.
#[derive(Default)]
pub struct QueryBusBuilder {
    handlers: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    duplicate: Option<&'static str>,
}

impl QueryBusBuilder {
    /// Registers the handler of query `Q`.
    pub fn query<Q, H>(mut self, handler: H) -> Self
    where
        Q: Query,
        H: QueryHandler<Q>,
    {
        let handler = Arc::new(handler);
        let call: DynQuery<Q> = Arc::new(move |query| {
            let handler = handler.clone();
            Box::pin(async move { handler.handle(query).await })
        });
        if self
            .handlers
            .insert(TypeId::of::<Q>(), Box::new(call))
            .is_some()
        {
            self.duplicate.get_or_insert(type_name::<Q>());
        }
        self
    }

    /// The bus, or the first query registered twice.
    pub fn build(self) -> Result<QueryBus, RegistrationError> {
        if let Some(query) = self.duplicate {
            return Err(RegistrationError::DuplicateQueryHandler { query });
        }
        Ok(QueryBus {
            handlers: Arc::new(self.handlers),
        })
    }
}

/// Answers queries by calling their handler in-process and awaiting it.
///
/// Queries are never sent over a transport: the process that asks reads the
/// store directly, which keeps reads synchronous and cheap.
#[derive(Clone)]
pub struct QueryBus {
    handlers: Arc<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for QueryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryBus")
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl QueryBus {
    /// Starts a registration.
    pub fn builder() -> QueryBusBuilder {
        QueryBusBuilder::default()
    }

    /// Asks `query` and waits for its answer.
    pub async fn ask<Q: Query>(&self, query: Q) -> Result<Q::Output, QueryError> {
        let call = self
            .handlers
            .get(&TypeId::of::<Q>())
            .and_then(|handler| handler.downcast_ref::<DynQuery<Q>>())
            .ok_or(QueryError::NoHandler {
                query: type_name::<Q>(),
            })?
            .clone();
        call(query).await
    }
}
