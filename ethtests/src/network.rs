//! Blockchain test networks: one fork for the whole chain, or a transition between two.

use lockstep_executor::revm::primitives::hardfork::SpecId;

/// The fork rules of a blockchain test's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Fixed(SpecId),
    /// `before` until block `at`, then `after`.
    AtBlock {
        before: SpecId,
        after: SpecId,
        at: u64,
    },
    /// `before` until timestamp `at`, then `after`.
    AtTime {
        before: SpecId,
        after: SpecId,
        at: u64,
    },
}

impl Network {
    /// Parses a fixture's `network`: a fork (`Cancun`) or a transition
    /// (`BerlinToLondonAt5`, `ShanghaiToCancunAtTime15k`).
    pub fn parse(name: &str) -> Result<Network, String> {
        if let Some(spec) = fork(name) {
            return Ok(Network::Fixed(spec));
        }
        let unknown = || format!("unknown network `{name}`");
        let (before, rest) = name.split_once("To").ok_or_else(unknown)?;
        let (after, at) = rest.rsplit_once("At").ok_or_else(unknown)?;
        let (by_time, at) = match at.strip_prefix("Time") {
            Some(at) => (true, at),
            None => (false, at),
        };
        let at: u64 = match at.strip_suffix('k') {
            Some(thousands) => thousands.parse::<u64>().map(|t| t * 1000),
            None => at.parse(),
        }
        .map_err(|_| unknown())?;
        let (before, after) = (fork(before).ok_or_else(unknown)?, fork(after).ok_or_else(unknown)?);
        Ok(if by_time {
            Network::AtTime { before, after, at }
        } else {
            Network::AtBlock { before, after, at }
        })
    }

    /// The fork of the block with this number and timestamp.
    pub fn spec(self, number: u64, timestamp: u64) -> SpecId {
        match self {
            Network::Fixed(spec) => spec,
            Network::AtBlock { before, after, at } => {
                if number >= at {
                    after
                } else {
                    before
                }
            }
            Network::AtTime { before, after, at } => {
                if timestamp >= at {
                    after
                } else {
                    before
                }
            }
        }
    }
}

/// revm's fork for a fixture fork name. The original Constantinople (EIP-1283 without
/// Petersburg's fix) has no revm spec, so it is not a known fork here.
fn fork(name: &str) -> Option<SpecId> {
    Some(match name {
        "Frontier" => SpecId::FRONTIER,
        "Homestead" => SpecId::HOMESTEAD,
        "EIP150" | "TangerineWhistle" => SpecId::TANGERINE,
        "EIP158" | "SpuriousDragon" => SpecId::SPURIOUS_DRAGON,
        "Byzantium" => SpecId::BYZANTIUM,
        "ConstantinopleFix" | "Petersburg" => SpecId::PETERSBURG,
        // The glacier forks only delay the difficulty bomb, which is not checked here.
        "Istanbul" | "MuirGlacier" => SpecId::ISTANBUL,
        "Berlin" => SpecId::BERLIN,
        "London" | "ArrowGlacier" | "GrayGlacier" => SpecId::LONDON,
        "Merge" | "Paris" => SpecId::MERGE,
        "Shanghai" => SpecId::SHANGHAI,
        "Cancun" => SpecId::CANCUN,
        "Prague" => SpecId::PRAGUE,
        "Osaka" => SpecId::OSAKA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forks_and_transitions() {
        assert_eq!(Network::parse("Cancun"), Ok(Network::Fixed(SpecId::CANCUN)));
        assert_eq!(Network::parse("ConstantinopleFix"), Ok(Network::Fixed(SpecId::PETERSBURG)));
        let london = Network::parse("BerlinToLondonAt5").unwrap();
        assert_eq!(london.spec(4, 100), SpecId::BERLIN);
        assert_eq!(london.spec(5, 0), SpecId::LONDON);
        let cancun = Network::parse("ShanghaiToCancunAtTime15k").unwrap();
        assert_eq!(cancun.spec(100, 14_999), SpecId::SHANGHAI);
        assert_eq!(cancun.spec(1, 15_000), SpecId::CANCUN);
    }

    #[test]
    fn rejects_unknown_networks() {
        for name in ["Constantinople", "Nowhere", "BerlinToMoonAt5", "BerlinToLondonAtX", ""] {
            assert!(Network::parse(name).is_err(), "{name} parsed");
        }
    }
}
