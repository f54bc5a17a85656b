//! Docker's detach keys: the sequence typed on an attached terminal that leaves the
//! container running and ends the session (`ctrl-p,ctrl-q` unless `--detach-keys`
//! says otherwise), and the scanner that finds it in what the user types.
use crate::error::NetdError;

/// Docker's default: ctrl-p then ctrl-q.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Docker's notation as bytes: keys separated by commas, each a single character or
/// `ctrl-X` with X a letter or one of `@[\]^_`.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, NetdError> {
    let bad = || {
        NetdError::InvalidArgument(format!(
            "invalid --detach-keys {spec:?}: keys separated by commas, each a character or ctrl-<a-z, @, [, \\, ], ^, _>"
        ))
    };
    if spec.is_empty() {
        return Err(bad());
    }
    spec.split(',')
        .map(|k| match k.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0].to_ascii_lowercase();
                match c {
                    b'a'..=b'z' => Ok(c - b'a' + 1),
                    b'@' => Ok(0),
                    b'[' => Ok(27),
                    b'\\' => Ok(28),
                    b']' => Ok(29),
                    b'^' => Ok(30),
                    b'_' => Ok(31),
                    _ => Err(bad()),
                }
            }
            Some(_) => Err(bad()),
            None if k.len() == 1 && k.is_ascii() => Ok(k.as_bytes()[0]),
            None => Err(bad()),
        })
        .collect()
}

/// Finds the detach sequence in a stream of input, as Docker's escape proxy does: the
/// bytes of a partial match are held back, given back when the match fails, and the
/// whole sequence is never passed on.
#[derive(Clone, Debug)]
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

/// What to pass on of a chunk of input, and whether the sequence was typed (then
/// nothing after it is passed on).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    pub pass: Vec<u8>,
    pub detach: bool,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    pub fn scan(&mut self, input: &[u8]) -> Scanned {
        let mut out = Scanned::default();
        for &b in input {
            if self.keys.is_empty() {
                out.pass.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    out.detach = true;
                    return out;
                }
                continue;
            }
            out.pass.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
            } else {
                out.pass.push(b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_dockers_notation() {
        assert_eq!(parse_detach_keys(DEFAULT_DETACH_KEYS).unwrap(), [16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-_").unwrap(),
            [1, b'x', 0, 31]
        );
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q"] {
            let e = parse_detach_keys(bad).unwrap_err().to_string();
            assert!(
                e.contains("--detach-keys") && e.contains("ctrl-<a-z"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_sequence_is_held_back_and_detaches() {
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.scan(b"ab\x10").pass, b"ab");
        // A broken sequence is given back, the new start held again.
        assert_eq!(s.scan(b"c\x10").pass, b"\x10c");
        let r = s.scan(b"\x11rest");
        assert!(r.detach);
        assert!(r.pass.is_empty());
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(
            s.scan(b"\x10\x10\x11"),
            Scanned {
                pass: vec![16],
                detach: true
            }
        );
    }
}
