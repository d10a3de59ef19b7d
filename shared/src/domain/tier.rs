//! Tiers: product policy — how long a range may be, how long raw state is
//! kept. A token names its caller's tier; a proxy records its owner's.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    /// Unknown or absent tiers count as `free`: a typo must never grant more.
    pub fn from_claim(claim: Option<&str>) -> Self {
        match claim {
            Some("pro") => Self::Pro,
            Some("enterprise") => Self::Enterprise,
            _ => Self::Free,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    /// Longest `daily` range or `aggregation` period, both ends inclusive.
    pub fn max_range_days(self) -> i64 {
        match self {
            Self::Free => 31,
            Self::Pro => 366,
            Self::Enterprise => 3660,
        }
    }

    /// How long raw events are kept (DynamoDB TTL); daily rollups are kept.
    pub fn raw_retention_days(self) -> i64 {
        match self {
            Self::Free => 7,
            Self::Pro => 30,
            Self::Enterprise => 90,
        }
    }
}
