//! Bad-block lists: the formats media errors are exchanged in.
//!
//! - **sysfs** (`/sys/block/pmemX/badblocks`, the region's `badblocks` under
//!   `/sys/bus/nd/devices/`): one `"%llu %u\n"` line per range, the start
//!   sector and the number of sectors, in 512-byte sectors.
//! - **ndctl JSON** (`ndctl list -M`): `"badblocks": [{"offset": S, "length":
//!   L, "dimms": [...]}]`, offsets and lengths in 512-byte sectors. Accepted
//!   as a top-level object with a `badblocks` array, an array of such
//!   objects, or the array of entries itself.
//!
//! Parsed lists are byte ranges `(offset, length)` relative to the device,
//! in the order given (not merged, not rounded). The emulated device keeps
//! its list in a sidecar file beside an image (`IMAGE.badblocks`) in the
//! sysfs format.
use crate::{DeviceError, Result};
use std::path::{Path, PathBuf};

/// The unit of bad-block lists: a 512-byte sector.
pub const SECTOR_SIZE: u64 = 512;

fn list_error(origin: &str, at: String, reason: impl Into<String>) -> DeviceError {
    DeviceError::BadBlockList {
        origin: origin.to_string(),
        at,
        reason: reason.into(),
    }
}

/// Converts a sector range to bytes, refusing empty and overflowing ranges.
fn sectors_to_bytes(start: u64, count: u64) -> std::result::Result<(u64, u64), String> {
    if count == 0 {
        return Err("the length must not be zero".into());
    }
    let off = start
        .checked_mul(SECTOR_SIZE)
        .ok_or("the start sector is too large")?;
    let len = count
        .checked_mul(SECTOR_SIZE)
        .ok_or("the sector count is too large")?;
    off.checked_add(len)
        .ok_or("the range runs past the largest offset")?;
    Ok((off, len))
}

/// Parses the sysfs format. `origin` names the input in errors (a path, or
/// e.g. "bad-block list"). Blank lines are skipped.
pub fn parse_sysfs_badblocks(text: &str, origin: &str) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}", i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 2 {
            return Err(list_error(
                origin,
                at(),
                format!("expected `START COUNT` (in 512-byte sectors), found {line:?}"),
            ));
        }
        let num = |s: &str, what: &str| {
            s.parse::<u64>().map_err(|_| {
                list_error(
                    origin,
                    at(),
                    format!("{what} {s:?} is not a non-negative decimal number"),
                )
            })
        };
        let start = num(fields[0], "start sector")?;
        let count = num(fields[1], "sector count")?;
        out.push(sectors_to_bytes(start, count).map_err(|r| list_error(origin, at(), r))?);
    }
    Ok(out)
}

/// Parses ndctl's JSON (see the module documentation for the accepted
/// shapes). Syntax errors name the line and column; other errors name the
/// element, e.g. `[1].badblocks[0]`.
pub fn parse_ndctl_badblocks(text: &str, origin: &str) -> Result<Vec<(u64, u64)>> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        list_error(
            origin,
            format!("line {} column {}", e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )
    })?;
    let mut out = Vec::new();
    let shape_error = |at: String| {
        list_error(
            origin,
            at,
            "expected an object with a `badblocks` array, an array of such objects, \
             or an array of {\"offset\", \"length\"} entries",
        )
    };
    match &v {
        serde_json::Value::Object(_) => collect_object(&v, "", origin, &mut out, true)?,
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_object() {
                    return Err(shape_error(format!("[{i}]")));
                }
                collect_object(item, &format!("[{i}]"), origin, &mut out, false)?;
            }
        }
        _ => return Err(shape_error("top level".into())),
    }
    Ok(out)
}

/// One object: an entry (`offset`/`length`), or a device object with a
/// `badblocks` array (or none, when it has no bad blocks).
fn collect_object(
    v: &serde_json::Value,
    path: &str,
    origin: &str,
    out: &mut Vec<(u64, u64)>,
    top: bool,
) -> Result<()> {
    let at = |p: &str| {
        if p.is_empty() {
            "top level".to_string()
        } else {
            p.to_string()
        }
    };
    if let Some(list) = v.get("badblocks") {
        let Some(items) = list.as_array() else {
            return Err(list_error(
                origin,
                format!("{path}.badblocks"),
                "`badblocks` must be an array",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            out.push(entry(item, &format!("{path}.badblocks[{i}]"), origin)?);
        }
        return Ok(());
    }
    if !top && v.get("offset").is_some() {
        out.push(entry(v, path, origin)?);
        return Ok(());
    }
    // A device object of `ndctl list` without bad blocks has no list at all.
    if v.get("dev").is_some() || v.get("badblock_count").is_some() {
        return match v.get("badblock_count").and_then(|c| c.as_u64()) {
            Some(n) if n > 0 => Err(list_error(
                origin,
                at(path),
                format!("`badblock_count` is {n} but there is no `badblocks` array"),
            )),
            _ => Ok(()),
        };
    }
    Err(list_error(
        origin,
        at(path),
        "expected an object with a `badblocks` array, an array of such objects, \
         or an array of {\"offset\", \"length\"} entries",
    ))
}

fn entry(v: &serde_json::Value, at: &str, origin: &str) -> Result<(u64, u64)> {
    let field = |name: &str| match v.get(name) {
        None => Err(list_error(
            origin,
            at.to_string(),
            format!("missing `{name}`"),
        )),
        Some(x) => x.as_u64().ok_or_else(|| {
            list_error(
                origin,
                at.to_string(),
                format!("`{name}` must be a non-negative integer (sectors), found {x}"),
            )
        }),
    };
    if !v.is_object() {
        return Err(list_error(
            origin,
            at.to_string(),
            "expected an object with `offset` and `length`",
        ));
    }
    let start = field("offset")?;
    let count = field("length")?;
    sectors_to_bytes(start, count).map_err(|r| list_error(origin, at.to_string(), r))
}

/// Parses either format: JSON when the first non-blank character is `{` or
/// `[`, the sysfs format otherwise. An empty input is an empty list.
pub fn parse_bad_block_list(text: &str, origin: &str) -> Result<Vec<(u64, u64)>> {
    match text.trim_start().chars().next() {
        Some('{' | '[') => parse_ndctl_badblocks(text, origin),
        _ => parse_sysfs_badblocks(text, origin),
    }
}

/// Formats byte ranges (multiples of [`SECTOR_SIZE`]) in the sysfs format.
/// Ranges longer than `u32::MAX` sectors are split, as the format's count is
/// 32-bit.
pub fn format_sysfs_badblocks(ranges: &[(u64, u64)]) -> String {
    let mut s = String::new();
    for &(off, len) in ranges {
        let mut start = off / SECTOR_SIZE;
        let mut count = len.div_ceil(SECTOR_SIZE);
        while count > 0 {
            let n = count.min(u64::from(u32::MAX));
            s.push_str(&format!("{start} {n}\n"));
            start += n;
            count -= n;
        }
    }
    s
}

/// The sidecar file holding the bad blocks of the image at `image`:
/// `IMAGE.badblocks` in the same directory.
pub fn sidecar_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(".badblocks");
    PathBuf::from(name)
}

/// Reads a sidecar file; `None` when there is none.
pub(crate) fn read_sidecar(path: &Path) -> Result<Option<Vec<(u64, u64)>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_sysfs_badblocks(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DeviceError::Os {
            what: format!("reading {}", path.display()),
            source,
        }),
    }
}

/// Writes the sidecar file atomically (a temporary file renamed over it), or
/// removes it when `ranges` is empty.
pub(crate) fn write_sidecar(path: &Path, ranges: &[(u64, u64)]) -> Result<()> {
    let os = |what: String| move |source| DeviceError::Os { what, source };
    if ranges.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(os(format!("removing {}", path.display()))(e))
            }
            _ => Ok(()),
        };
    }
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = format_sysfs_badblocks(ranges);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        os(format!("writing {}", path.display()))(e)
    })
}

fn read_hex_or_dec(path: &Path) -> Option<u64> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// The bad blocks of the device-DAX device `major:minor` of `size` bytes,
/// from the sysfs tree at `sys_root` (normally `/sys`).
///
/// Walks up from the device's directory (`dev/char/MAJ:MIN`, symlinks
/// resolved) to the nearest directory with a `badblocks` file: the device
/// itself, or its region (`.../ndbusN/regionM`). Region lists are relative
/// to the region; when both the region and the device give their physical
/// start (`resource`), entries are moved to device offsets and clipped to the
/// device, otherwise a region list cannot be placed and an error says so.
/// No `badblocks` file anywhere gives an empty list.
pub fn devdax_badblocks(
    sys_root: &Path,
    major: u32,
    minor: u32,
    size: u64,
) -> Result<Vec<(u64, u64)>> {
    let link = sys_root.join(format!("dev/char/{major}:{minor}"));
    let dir = std::fs::canonicalize(&link).map_err(|source| DeviceError::Os {
        what: format!("resolving {}", link.display()),
        source,
    })?;
    let root = std::fs::canonicalize(sys_root).unwrap_or_else(|_| sys_root.to_path_buf());
    let mut at = Some(dir.as_path());
    while let Some(d) = at {
        if !d.starts_with(&root) || d == root {
            break;
        }
        let list = d.join("badblocks");
        if list.is_file() {
            let text = std::fs::read_to_string(&list).map_err(|source| DeviceError::Os {
                what: format!("reading {}", list.display()),
                source,
            })?;
            let ranges = parse_sysfs_badblocks(&text, &list.display().to_string())?;
            if d == dir {
                return Ok(clip(ranges, 0, size));
            }
            let dev_res = read_hex_or_dec(&dir.join("resource"))
                .or_else(|| read_hex_or_dec(&dir.join("device/resource")))
                .filter(|&r| r != 0);
            let region_res = read_hex_or_dec(&d.join("resource")).filter(|&r| r != 0);
            let (Some(dev_res), Some(region_res)) = (dev_res, region_res) else {
                return Err(DeviceError::Unsupported(format!(
                    "{}: the device's place in its region is unknown (no readable `resource`)",
                    list.display()
                )));
            };
            let Some(delta) = dev_res.checked_sub(region_res) else {
                return Err(DeviceError::Unsupported(format!(
                    "{}: the device starts before its region",
                    list.display()
                )));
            };
            return Ok(clip(ranges, delta, size));
        }
        at = d.parent();
    }
    Ok(Vec::new())
}

/// Moves region-relative ranges to a device starting at `delta` and keeps
/// the parts inside `[0, size)`.
fn clip(ranges: Vec<(u64, u64)>, delta: u64, size: u64) -> Vec<(u64, u64)> {
    ranges
        .into_iter()
        .filter_map(|(off, len)| {
            let a = off.max(delta);
            let b = off.saturating_add(len).min(delta.saturating_add(size));
            (a < b).then(|| (a - delta, b - a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_of(e: &DeviceError) -> String {
        match e {
            DeviceError::BadBlockList { at, .. } => at.clone(),
            e => panic!("expected a bad-block list error, got {e}"),
        }
    }

    #[test]
    fn sysfs_format() {
        let r = parse_sysfs_badblocks("42 8\n0 1\n\n1000000 16\n", "x").unwrap();
        assert_eq!(r, [(42 * 512, 8 * 512), (0, 512), (512_000_000, 16 * 512)]);
        assert!(parse_sysfs_badblocks("", "x").unwrap().is_empty());
        // Malformed lines are named.
        for (text, line, needle) in [
            ("1 2\n3\n", "line 2", "START COUNT"),
            ("1 2\n3 4 5\n", "line 2", "START COUNT"),
            ("x 2\n", "line 1", "start sector"),
            ("1 -2\n", "line 1", "sector count"),
            ("\n\n5 0\n", "line 3", "zero"),
            ("36028797018963968 1\n", "line 1", "too large"),
            ("1 0x10\n", "line 1", "sector count"),
        ] {
            let e = parse_sysfs_badblocks(text, "the list").unwrap_err();
            assert_eq!(at_of(&e), line, "{text:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(needle) && msg.starts_with("the list: "),
                "{msg}"
            );
        }
    }

    #[test]
    fn ndctl_json_shapes() {
        let object = r#"{"dev":"namespace0.0","mode":"devdax","badblock_count":2,
            "badblocks":[{"offset":42,"length":8,"dimms":["nmem0"]},
                         {"offset":1024,"length":1,"dimms":["nmem1","nmem0"]}]}"#;
        let want = vec![(42 * 512, 8 * 512), (1024 * 512, 512)];
        assert_eq!(parse_ndctl_badblocks(object, "x").unwrap(), want);
        let array_of_objects = format!(
            r#"[{object}, {{"dev":"namespace1.0","mode":"fsdax"}},
               {{"dev":"region2","badblocks":[{{"offset":7,"length":1}}]}}]"#
        );
        let mut want2 = want.clone();
        want2.push((7 * 512, 512));
        assert_eq!(
            parse_ndctl_badblocks(&array_of_objects, "x").unwrap(),
            want2
        );
        let bare = r#"[{"offset":42,"length":8,"dimms":["nmem0"]},{"offset":1024,"length":1}]"#;
        assert_eq!(parse_ndctl_badblocks(bare, "x").unwrap(), want);
        assert!(parse_ndctl_badblocks("[]", "x").unwrap().is_empty());
        assert!(
            parse_ndctl_badblocks(r#"{"badblocks":[]}"#, "x")
                .unwrap()
                .is_empty()
        );
        // Auto-detection picks the format.
        assert_eq!(parse_bad_block_list(bare, "x").unwrap(), want);
        assert_eq!(
            parse_bad_block_list("  42 8\n2048 1\n", "x").unwrap(),
            vec![(42 * 512, 8 * 512), (2048 * 512, 512)]
        );
        assert!(parse_bad_block_list("", "x").unwrap().is_empty());
    }

    #[test]
    fn ndctl_json_errors() {
        for (text, at, needle) in [
            (
                "{\"badblocks\": [\n {\"offset\": 1,\n",
                "line 3 column 0",
                "invalid JSON",
            ),
            (
                "{\"badblocks\":[{\"offset\":1}]}",
                ".badblocks[0]",
                "missing `length`",
            ),
            (
                "[{\"badblocks\":[{\"offset\":1,\"length\":1}]},{\"badblocks\":[{\"length\":2}]}]",
                "[1].badblocks[0]",
                "missing `offset`",
            ),
            ("[{\"offset\":-1,\"length\":1}]", "[0]", "non-negative"),
            ("[{\"offset\":\"5\",\"length\":1}]", "[0]", "non-negative"),
            ("[{\"offset\":5,\"length\":0}]", "[0]", "zero"),
            (
                "{\"badblocks\":{\"offset\":1}}",
                ".badblocks",
                "must be an array",
            ),
            ("{\"something\":1}", "top level", "expected an object"),
            ("[1,2]", "[0]", "expected an object"),
            ("\"text\"", "top level", "expected an object"),
            (
                "{\"dev\":\"x\",\"badblock_count\":3}",
                "top level",
                "no `badblocks`",
            ),
        ] {
            let e = parse_ndctl_badblocks(text, "in.json").unwrap_err();
            assert_eq!(at_of(&e), at, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn format_round_trip() {
        let r = vec![(0, 4096), (8192 * 512, 512), (1 << 40, 1 << 41)];
        let text = format_sysfs_badblocks(&r);
        assert!(text.starts_with("0 8\n8192 1\n"), "{text}");
        let back = parse_sysfs_badblocks(&text, "x").unwrap();
        // The 2 TiB range is split at the 32-bit count limit.
        assert_eq!(back.len(), 4);
        assert_eq!(
            back.iter().map(|r| r.1).sum::<u64>(),
            4096 + 512 + (1 << 41)
        );
        assert_eq!(
            sidecar_path(Path::new("/a/b/fs.img")),
            Path::new("/a/b/fs.img.badblocks")
        );
    }

    #[test]
    fn devdax_sysfs_badblocks() {
        let root = crate::file::tests::TempPath::new("bbsysfs");
        let r = &root.0;
        // devices/.../region0 (badblocks, resource) / dax0.0 / dax0.0 (class device)
        let region = r.join("devices/platform/e820_pmem/ndbus0/region0");
        let dev = region.join("dax0.0/dax0.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(r.join("dev/char")).unwrap();
        std::os::unix::fs::symlink(&dev, r.join("dev/char/252:0")).unwrap();
        // No badblocks anywhere yet: empty.
        assert!(devdax_badblocks(r, 252, 0, 1 << 30).unwrap().is_empty());
        std::fs::write(region.join("badblocks"), "0 8\n4104 8\n2101248 16\n").unwrap();
        // The device's place is unknown: an error, not a wrong answer.
        let e = devdax_badblocks(r, 252, 0, 1 << 30).unwrap_err();
        assert!(e.to_string().contains("resource"), "{e}");
        std::fs::write(region.join("resource"), "0x100000000\n").unwrap();
        std::fs::write(dev.join("resource"), "0x100200000\n").unwrap();
        // Region sector 4104 = region byte 0x201000 = device byte 0x1000;
        // sector 0 lies before the device (its metadata) and is dropped; the
        // last range lies past a 1 GiB device.
        assert_eq!(
            devdax_badblocks(r, 252, 0, 1 << 30).unwrap(),
            vec![(0x1000, 4096)]
        );
        assert_eq!(
            devdax_badblocks(r, 252, 0, 2 << 30).unwrap(),
            vec![(0x1000, 4096), (2101248 * 512 - 0x200000, 16 * 512)]
        );
        // A list on the device itself is device-relative.
        std::fs::write(dev.join("badblocks"), "16 8\n").unwrap();
        assert_eq!(
            devdax_badblocks(r, 252, 0, 1 << 30).unwrap(),
            vec![(8192, 4096)]
        );
        // Garbage names its file and line.
        std::fs::write(dev.join("badblocks"), "16 8\nbanana\n").unwrap();
        let e = devdax_badblocks(r, 252, 0, 1 << 30).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(devdax_badblocks(r, 9, 9, 4096).is_err());
    }
}
