//! MySQL protocol decoding (being written).
