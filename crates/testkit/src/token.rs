//! (token server: below)
