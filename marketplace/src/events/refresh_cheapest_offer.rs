//! Keeps `books.offer_id`, `price` and `stock` on the cheapest offer that
//! still has stock.

use std::sync::Arc;

use bus_core::{BatchHandler, BatchOutcome, EventHandler, HandlerError, MessageContext};
use uuid::Uuid;

use super::{OfferCreated, StockClaimed};
use crate::store::BookRepository;

/// Recomputes a book's cheapest in-stock offer from its offers.
///
/// Recomputing (rather than applying a delta) makes it idempotent and
/// insensitive to event order: whichever delivery runs last writes the
/// current truth. Each store serialises refreshes of one book (a row lock
/// on PostgreSQL, the single writer on SQLite), so the last one reads every
/// offer committed before it. On the durable bus the refresh commits the
/// events' receipts with it.
#[derive(Clone)]
pub struct RefreshCheapestOffer {
    books: Arc<dyn BookRepository>,
}

impl RefreshCheapestOffer {
    /// A subscriber writing to `books`.
    pub fn new(books: Arc<dyn BookRepository>) -> Self {
        Self { books }
    }

    /// Brings each book of `book_ids` up to date, in one transaction that
    /// records the durable bus's receipts of the events of `contexts`.
    pub async fn refresh(
        &self,
        book_ids: &[Uuid],
        contexts: &[&MessageContext],
    ) -> Result<(), HandlerError> {
        let receipts: Vec<_> = contexts
            .iter()
            .filter_map(|context| context.durable_receipt())
            .collect();
        self.books
            .refresh_cheapest_offers(book_ids, &receipts)
            .await?;
        Ok(())
    }
}

impl EventHandler<OfferCreated> for RefreshCheapestOffer {
    async fn handle(
        &self,
        event: OfferCreated,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        self.refresh(&[event.book_id], &[&context]).await
    }
}

impl EventHandler<StockClaimed> for RefreshCheapestOffer {
    async fn handle(
        &self,
        event: StockClaimed,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        self.refresh(&event.book_ids, &[&context]).await
    }
}

/// A batch of events: one recompute per distinct book of the batch.
impl BatchHandler<OfferCreated> for RefreshCheapestOffer {
    async fn handle_batch(&self, batch: &[(OfferCreated, MessageContext)]) -> BatchOutcome {
        let book_ids: Vec<Uuid> = batch.iter().map(|(event, _)| event.book_id).collect();
        let contexts: Vec<_> = batch.iter().map(|(_, context)| context).collect();
        self.refresh(&book_ids, &contexts).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}

/// A batch of events: one recompute per distinct book of the batch.
impl BatchHandler<StockClaimed> for RefreshCheapestOffer {
    async fn handle_batch(&self, batch: &[(StockClaimed, MessageContext)]) -> BatchOutcome {
        let book_ids: Vec<Uuid> = batch
            .iter()
            .flat_map(|(event, _)| event.book_ids.iter().copied())
            .collect();
        let contexts: Vec<_> = batch.iter().map(|(_, context)| context).collect();
        self.refresh(&book_ids, &contexts).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}
