//! The little of ELF64 the image builder reads: named sections (a module's `.modinfo`, a
//! program's `.dynamic`, `.dynstr` and `.interp`), from the section headers.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("the ELF headers point past the end of the file")]
    Truncated,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, Error> {
    let s = b.get(off..off + 2).ok_or(Error::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, Error> {
    let s = b.get(off..off + 4).ok_or(Error::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, Error> {
    let s = b.get(off..off + 8).ok_or(Error::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn usize_at(b: &[u8], off: usize) -> Result<usize, Error> {
    usize::try_from(u64_at(b, off)?).map_err(|_| Error::Truncated)
}

/// The contents of the section called `name`, if the file has one (`None` for a
/// `SHT_NOBITS` section too).
pub fn section<'a>(file: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, Error> {
    if file.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(Error::NotElf64);
    }
    let shoff = usize_at(file, 0x28)?;
    let shentsize = usize::from(u16_at(file, 0x3a)?);
    let shnum = usize::from(u16_at(file, 0x3c)?);
    let shstrndx = usize::from(u16_at(file, 0x3e)?);
    if shentsize < 0x40 {
        return Err(Error::Truncated);
    }
    let header = |i: usize| -> Result<(u32, u32, usize, usize), Error> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(file, h)?,
            u32_at(file, h + 4)?,
            usize_at(file, h + 0x18)?,
            usize_at(file, h + 0x20)?,
        ))
    };
    let bytes = |off: usize, size: usize| {
        file.get(off..off.checked_add(size).ok_or(Error::Truncated)?)
            .ok_or(Error::Truncated)
    };
    let (_, _, str_off, str_size) = header(shstrndx)?;
    let names = bytes(str_off, str_size)?;
    for i in 0..shnum {
        let (name_off, kind, off, size) = header(i)?;
        let n = names.get(name_off as usize..).ok_or(Error::Truncated)?;
        let n = &n[..n.iter().position(|&c| c == 0).unwrap_or(n.len())];
        if n == name.as_bytes() {
            const SHT_NOBITS: u32 = 8;
            return if kind == SHT_NOBITS {
                Ok(None)
            } else {
                bytes(off, size).map(Some)
            };
        }
    }
    Ok(None)
}

/// A kernel module's `.modinfo` strings (`key=value`, NUL-separated): the values of `key`.
pub fn modinfo(file: &[u8], key: &str) -> Result<Vec<String>, Error> {
    let Some(info) = section(file, ".modinfo")? else {
        return Ok(Vec::new());
    };
    Ok(info
        .split(|&c| c == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter_map(|s| s.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect())
}

/// A dynamically linked program or library: its `DT_NEEDED` names and its interpreter
/// (`PT_INTERP`, from the `.interp` section).
pub struct Dynamic {
    pub needed: Vec<String>,
    pub interp: Option<String>,
}

pub fn dynamic(file: &[u8]) -> Result<Dynamic, Error> {
    let cstr = |b: &[u8], off: usize| -> Result<String, Error> {
        let s = b.get(off..).ok_or(Error::Truncated)?;
        let end = s.iter().position(|&c| c == 0).ok_or(Error::Truncated)?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let interp = section(file, ".interp")?.map(|i| cstr(i, 0)).transpose()?;
    let mut needed = Vec::new();
    if let (Some(dynamic), Some(strs)) = (section(file, ".dynamic")?, section(file, ".dynstr")?) {
        const DT_NULL: u64 = 0;
        const DT_NEEDED: u64 = 1;
        for e in dynamic.chunks_exact(16) {
            let tag = u64_at(e, 0)?;
            if tag == DT_NULL {
                break;
            }
            if tag == DT_NEEDED {
                needed.push(cstr(strs, usize_at(e, 8)?)?);
            }
        }
    }
    Ok(Dynamic { needed, interp })
}

/// Whether an ELF note section holds a note of `name` and `kind`.
pub fn has_note(notes: &[u8], name: &str, kind: u32) -> bool {
    let mut off = 0usize;
    let align4 = |n: usize| (n + 3) & !3;
    while off + 12 <= notes.len() {
        let (Ok(namesz), Ok(descsz), Ok(t)) = (
            u32_at(notes, off),
            u32_at(notes, off + 4),
            u32_at(notes, off + 8),
        ) else {
            return false;
        };
        let n = notes
            .get(off + 12..off + 12 + namesz as usize)
            .unwrap_or_default();
        if t == kind && n.strip_suffix(&[0]).unwrap_or(n) == name.as_bytes() {
            return true;
        }
        off += 12 + align4(namesz as usize) + align4(descsz as usize);
    }
    false
}
