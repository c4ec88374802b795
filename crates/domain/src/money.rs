//! Money is integer minor units; splits are exact.

/// The platform's commission and the driver's payout of one fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub commission_minor: i64,
    pub payout_minor: i64,
}

/// Splits `fare_minor` at `commission_bp` basis points (2500 = 25%). The commission rounds
/// half up and the payout takes the rest, so the two always add up to the fare exactly.
pub fn split_commission(fare_minor: i64, commission_bp: u32) -> Split {
    let bp = i128::from(commission_bp.min(10_000));
    let fare = i128::from(fare_minor);
    let commission = (fare * bp + 5_000).div_euclid(10_000);
    let commission_minor = i64::try_from(commission).unwrap_or(fare_minor);
    Split {
        commission_minor,
        payout_minor: fare_minor - commission_minor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_quarter_of_a_fare() {
        assert_eq!(
            split_commission(1_000, 2_500),
            Split {
                commission_minor: 250,
                payout_minor: 750
            }
        );
        // 25% of 1,001 is 250.25: the cent goes to the driver.
        assert_eq!(split_commission(1_001, 2_500).commission_minor, 250);
        assert_eq!(split_commission(1_002, 2_500).commission_minor, 251);
    }

    proptest! {
        #[test]
        fn commission_plus_payout_is_the_fare(fare in 0i64..1_000_000_000, bp in 0u32..=10_000) {
            let s = split_commission(fare, bp);
            prop_assert_eq!(s.commission_minor + s.payout_minor, fare);
            prop_assert!(s.commission_minor >= 0 && s.payout_minor >= 0);
        }
    }
}
