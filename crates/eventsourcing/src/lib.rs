//! Application layer: event-sourced aggregates and DCB decision models (work in progress).
