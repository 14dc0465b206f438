//! (fault proxy: below)
