//! Parsing of sizes and offsets as the command line writes them.
use anyhow::{Result, bail};

/// Parses a byte count as xfs_io reads one: a number with an optional
/// suffix, `b` (one 4 KiB block), `s` (a 512-byte sector), `k`, `m`, `g`,
/// `t`, `p`, `e` (powers of 1024, either case), or the same spelled `KiB`,
/// `MiB`, `GiB`, `TiB`; or a 0x-prefixed hexadecimal number.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    if t.is_empty() {
        bail!("empty size");
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16)
            .map_err(|_| anyhow::anyhow!("bad hexadecimal number {s:?}"));
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    if !suffix.chars().all(|c| c.is_ascii_alphabetic()) {
        bail!("bad size {s:?}");
    }
    let mult: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" => 1,
        "b" => 4096,
        "s" => 512,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "e" | "eib" => 1 << 60,
        _ => {
            // One letter shows as 'q', a longer suffix as "kb".
            let shown = match suffix.chars().collect::<Vec<_>>()[..] {
                [c] => format!("{c:?}"),
                _ => format!("{suffix:?}"),
            };
            bail!(
                "unknown size suffix {shown} in {s:?} (use b for 4 KiB blocks, s for 512-byte sectors, k, m, g, t, or KiB, MiB, GiB)"
            )
        }
    };
    if num.is_empty() {
        bail!("bad size {s:?}: no number before the suffix");
    }
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("bad size {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

/// Splits a command line into words, honouring single and double quotes.
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("0x1000").unwrap(), 4096);
        assert_eq!(parse_size("17").unwrap(), 17);
        assert!(parse_size("12q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999t").is_err());
        assert!(parse_size("16384e").is_err());
    }

    #[test]
    fn xfs_io_suffixes() {
        assert_eq!(parse_size("1b").unwrap(), 4096);
        assert_eq!(parse_size("3B").unwrap(), 3 * 4096);
        assert_eq!(parse_size("2s").unwrap(), 1024);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1gib").unwrap(), 1 << 30);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert!(parse_size("k").is_err());
        assert!(parse_size("4kb").is_err());
        assert!(parse_size("1.5k").is_err());
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words("pwrite -S 0x61 0 4k").unwrap(),
            vec!["pwrite", "-S", "0x61", "0", "4k"]
        );
        assert_eq!(split_words("open 'a b'").unwrap(), vec!["open", "a b"]);
        assert!(split_words("open 'a").is_err());
    }
}
