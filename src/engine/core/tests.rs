//! Unit tests of the decision core (filled in below).
