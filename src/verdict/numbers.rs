//! Phone numbers and ranges (work in progress).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NumberError(pub String);
pub struct NumberSet;
impl NumberSet {
    pub fn parse_one(_s: &str, _region: &str) -> Result<(), NumberError> {
        Ok(())
    }
}
pub fn region_id(_r: &str) -> Option<()> {
    Some(())
}
