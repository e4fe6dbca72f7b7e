//! Embedded durable file backend of the DCB event store (work in progress).
