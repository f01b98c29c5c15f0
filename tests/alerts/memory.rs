//! An in-memory outbox with the store's semantics, for the sender tests.
//! Kept outside the library on purpose: the real one is the database.

use std::sync::Mutex;

use cidguard::alert::{OutboxStore, OutgoingAlert};

#[derive(Debug, thiserror::Error)]
#[error("memory outbox: {0}")]
pub struct MemoryError(String);

#[derive(Debug, Clone)]
pub struct Row {
    pub alert: OutgoingAlert,
    pub sent_at_ms: Option<i64>,
}

#[derive(Debug, Default)]
pub struct MemoryOutbox {
    rows: Mutex<Vec<Row>>,
}

impl MemoryOutbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Row>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn rows(&self) -> Vec<Row> {
        self.lock().clone()
    }

    pub fn row(&self, id: i64) -> Option<Row> {
        self.lock().iter().find(|r| r.alert.id == id).cloned()
    }
}

impl OutboxStore for MemoryOutbox {
    type Error = MemoryError;

    fn enqueue(&self, alert: &OutgoingAlert) -> Result<bool, MemoryError> {
        let mut rows = self.lock();
        if rows.iter().any(|r| r.alert.dedupe_key == alert.dedupe_key) {
            return Ok(false);
        }
        let mut a = alert.clone();
        a.id = rows.len() as i64 + 1;
        rows.push(Row {
            alert: a,
            sent_at_ms: None,
        });
        Ok(true)
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutgoingAlert>, MemoryError> {
        let mut due: Vec<OutgoingAlert> = self
            .lock()
            .iter()
            .filter(|r| r.sent_at_ms.is_none() && r.alert.next_attempt_at_ms <= now_ms)
            .map(|r| r.alert.clone())
            .collect();
        due.sort_by_key(|a| (a.next_attempt_at_ms, a.id));
        due.truncate(limit);
        Ok(due)
    }

    fn mark_sent(&self, id: i64, at_ms: i64) -> Result<(), MemoryError> {
        let mut rows = self.lock();
        let row = rows
            .iter_mut()
            .find(|r| r.alert.id == id)
            .ok_or_else(|| MemoryError(format!("no alert {id}")))?;
        if row.sent_at_ms.is_some() {
            return Err(MemoryError(format!("alert {id} marked sent twice")));
        }
        row.sent_at_ms = Some(at_ms);
        Ok(())
    }

    fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at_ms: i64,
    ) -> Result<(), MemoryError> {
        let mut rows = self.lock();
        let row = rows
            .iter_mut()
            .find(|r| r.alert.id == id)
            .ok_or_else(|| MemoryError(format!("no alert {id}")))?;
        row.alert.attempts += 1;
        row.alert.last_error = Some(error.to_string());
        row.alert.next_attempt_at_ms = next_attempt_at_ms;
        Ok(())
    }

    fn pending(&self) -> Result<usize, MemoryError> {
        Ok(self
            .lock()
            .iter()
            .filter(|r| r.sent_at_ms.is_none())
            .count())
    }
}
