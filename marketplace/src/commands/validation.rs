//! The rules a command must pass wherever it comes from: the HTTP edge
//! checks them before dispatch (`422`), and [`Validated`] checks them again
//! before a handler runs, because a consumed message may not have come
//! through the edge (a producer with broker credentials, an older API).

use bus_core::{BatchHandler, BatchOutcome, Command, CommandHandler, HandlerError, MessageContext};
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::model::text_error;

/// Refuses control characters and bidirectional overrides in a name, title
/// or author (see [`crate::model::text_error`]).
pub(crate) fn plain_text(text: &str) -> Result<(), ValidationError> {
    match text_error(text) {
        Some(message) => Err(ValidationError::new("plain_text").with_message(message.into())),
        None => Ok(()),
    }
}

/// Runs the command's validation before its handler: an invalid command is
/// a permanent failure whose message is the validation error, so every bus
/// dead-letters it with that reason and never applies it.
#[derive(Debug, Clone)]
pub struct Validated<H>(pub H);

impl<C, H> CommandHandler<C> for Validated<H>
where
    C: Command + Validate,
    H: CommandHandler<C>,
{
    async fn handle(&self, command: C, context: MessageContext) -> Result<(), HandlerError> {
        validate(&command)?;
        self.0.handle(command, context).await
    }
}

/// In a batch, an invalid command gets its own permanent failure and the
/// valid ones go on to the handler, as one batch.
impl<C, H> BatchHandler<C> for Validated<H>
where
    C: Command + Validate + Clone,
    H: BatchHandler<C>,
{
    async fn handle_batch(&self, batch: &[(C, MessageContext)]) -> BatchOutcome {
        let mut results: Vec<Result<(), HandlerError>> = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        let mut valid_at = Vec::with_capacity(batch.len());
        for (index, (command, context)) in batch.iter().enumerate() {
            match validate(command) {
                Ok(()) => {
                    valid.push((command.clone(), context.clone()));
                    valid_at.push(index);
                    results.push(Ok(()));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        if valid.len() == batch.len() {
            return self.0.handle_batch(batch).await;
        }
        if !valid.is_empty() {
            let outcomes = self.0.handle_batch(&valid).await?;
            if outcomes.len() != valid.len() {
                return Err(HandlerError::permanent(format!(
                    "batch handler of {} returned {} outcomes for {} messages",
                    C::NAME,
                    outcomes.len(),
                    valid.len()
                )));
            }
            for (index, outcome) in valid_at.into_iter().zip(outcomes) {
                results[index] = outcome;
            }
        }
        Ok(results)
    }
}

/// The command's validation as a handler result: an invalid command is a
/// permanent failure naming every invalid field.
fn validate<C: Command + Validate>(command: &C) -> Result<(), HandlerError> {
    command.validate().map_err(|errors| {
        let described: Vec<String> = field_errors(&errors)
            .into_iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect();
        HandlerError::Permanent {
            message: format!("invalid {}: {}", C::NAME, described.join("; ")),
            source: Some(Box::new(errors)),
        }
    })
}

/// Every invalid field as `(JSON path, what is wrong)`, sorted by path; the
/// paths are the client's (`items[0].quantity`), not Rust's.
pub fn field_errors(errors: &ValidationErrors) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    flatten(errors, "", &mut fields);
    fields.sort();
    fields
}

fn flatten(errors: &ValidationErrors, prefix: &str, out: &mut Vec<(String, String)>) {
    for (name, kind) in errors.errors() {
        let path = format!("{prefix}{}", camel_case(name));
        match kind {
            ValidationErrorsKind::Field(list) => out.extend(list.iter().map(|e| {
                let message = e
                    .message
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| describe(e));
                (path.clone(), message)
            })),
            ValidationErrorsKind::Struct(inner) => flatten(inner, &format!("{path}."), out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten(inner, &format!("{path}[{index}]."), out);
                }
            }
        }
    }
}

fn describe(error: &ValidationError) -> String {
    let param = |name: &str| error.params.get(name).map(ToString::to_string);
    match error.code.as_ref() {
        "length" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("length must be between {min} and {max}"),
            _ => "invalid length".to_owned(),
        },
        "range" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be between {min} and {max}"),
            _ => "out of range".to_owned(),
        },
        code => format!("invalid ({code})"),
    }
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
