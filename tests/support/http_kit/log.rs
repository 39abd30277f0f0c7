//! What a fake saw: a request log of the fake's own record type, and the contract violations it
//! found (requests the real server would not have taken), for tests to assert on.

use std::sync::{Mutex, MutexGuard};

/// Requests in the order they were answered.
pub struct RequestLog<T>(Mutex<Vec<T>>);

impl<T> Default for RequestLog<T> {
    fn default() -> Self {
        RequestLog(Mutex::new(Vec::new()))
    }
}

impl<T: Clone> RequestLog<T> {
    pub fn push(&self, record: T) {
        self.lock().push(record);
    }

    /// A copy of every record so far.
    pub fn all(&self) -> Vec<T> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The records in place (for counting without a copy).
    pub fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.0.lock().unwrap()
    }
}

/// Requests (or answers) the upstream contract does not allow, as sentences.
#[derive(Default)]
pub struct Violations(RequestLog<String>);

impl Violations {
    pub fn push(&self, text: String) {
        self.0.push(text);
    }

    pub fn all(&self) -> Vec<String> {
        self.0.all()
    }

    /// Fails the test with every violation, under `heading`.
    #[track_caller]
    pub fn assert_none(&self, heading: &str) {
        let v = self.all();
        assert!(v.is_empty(), "{heading}:\n{}", v.join("\n"));
    }
}
