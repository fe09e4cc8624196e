//! adpipe's end-to-end tests live in `tests/tests/`: stages chained on a real Tansu broker and
//! the project's schema registry, checked by what reaches each topic.
