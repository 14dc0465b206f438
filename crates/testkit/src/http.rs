//! (http helpers: below)
