//! Typed events: Rust structs that name their event type.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A payload type that names its event type, so it can be emitted and
/// subscribed to as itself.
///
/// ```
/// use nerve::TypedEvent;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SpecimenCompleted {
///     specimen_id: String,
///     confidence: f64,
/// }
/// impl TypedEvent for SpecimenCompleted {
///     const NAME: &'static str = "specimen.completed";
/// }
/// ```
pub trait TypedEvent: Serialize + DeserializeOwned + Send + 'static {
    /// The event type name, for example `"specimen.completed"`.
    const NAME: &'static str;
}
