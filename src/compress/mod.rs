//! The compression library: message policy, protected spans, selection and caching. No HTTP here.
pub mod lingua2;
