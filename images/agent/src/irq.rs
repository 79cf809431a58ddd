//! The interrupt lines of the devices under test, from `/proc/interrupts`: which line each
//! driver asked for (MSI-X vectors, MSI, or a wired INTx / ISA line on the IO-APIC), its chip
//! and how many interrupts it took. Format: `kernel/irq/proc.c`, `show_interrupts()`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::rec::Record;

/// The devices the workload drove (`/sys/class/net/eth0`, `/sys/block/vda`), registered as it
/// finds them so that the agent reports their lines once the workload is over, failed or not.
static UNDER_TEST: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Registers `name` (its sysfs entry `sys`) as a device under test; once per name.
pub fn under_test(name: &str, sys: &str) {
    let mut v = UNDER_TEST.lock().unwrap_or_else(|e| e.into_inner());
    if !v.iter().any(|(n, _)| n == name) {
        v.push((name.to_string(), sys.to_string()));
    }
}

/// One line of `/proc/interrupts` for a numbered interrupt.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub irq: u32,
    /// The sum over the CPUs' columns.
    pub count: u64,
    /// `IO-APIC`, `PCI-MSI`, `PCI-MSIX-0000:00:03.0`, `IR-PCI-MSI`, ...
    pub chip: String,
    /// The handlers' names (`request_irq`'s `name`): `eth0`, `virtio0-input.0`, `ata_piix`.
    pub actions: Vec<String>,
}

/// Parses `/proc/interrupts`: the header's `CPUn` columns say how many counts each line has;
/// lines that are not a numbered interrupt (`NMI:`, `LOC:`, `ERR:`) or too odd to read are
/// skipped.
pub fn parse(text: &str) -> Vec<Line> {
    let mut lines = text.lines();
    let cpus = lines
        .next()
        .map(|h| {
            h.split_whitespace()
                .filter(|w| w.starts_with("CPU"))
                .count()
        })
        .unwrap_or(0)
        .max(1);
    lines
        .filter_map(|l| {
            let (label, rest) = l.split_once(':')?;
            let irq: u32 = label.trim().parse().ok()?;
            let mut words = rest.split_whitespace().peekable();
            let mut count = 0u64;
            for _ in 0..cpus {
                let n: u64 = words.peek()?.parse().ok()?;
                count = count.saturating_add(n);
                words.next();
            }
            let chip = words.next()?.to_string();
            // The hardware irq and the flow (`49152-edge`, `14-fasteoi`, `-edge` without a
            // domain), and `Edge`/`Level` where the kernel shows the trigger: at most two
            // words before the handlers.
            for _ in 0..2 {
                if words.peek().is_some_and(|w| is_hwirq_or_flow(w)) {
                    words.next();
                }
            }
            let rest: Vec<&str> = words.collect();
            let actions = rest
                .join(" ")
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            Some(Line {
                irq,
                count,
                chip,
                actions,
            })
        })
        .collect()
}

fn is_hwirq_or_flow(w: &str) -> bool {
    if matches!(w, "Edge" | "Level") {
        return true;
    }
    let (num, flow) = w.split_once('-').unwrap_or((w, ""));
    num.chars().all(|c| c.is_ascii_digit())
        && flow
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !(num.is_empty() && flow.is_empty())
}

/// What names a device's interrupt lines.
#[derive(Debug, Default)]
pub struct Owner {
    /// Handler names that are the device's: the interface (`eth0`: e1000) and its PCI
    /// function's driver (`ata_piix`, which names its legacy IRQ 14/15 handlers so).
    pub names: Vec<String>,
    /// The virtio device (`virtio0`): its handlers are `virtio0-<queue>`, `virtio0-config`, or
    /// `virtio0` on INTx.
    pub virtio: Option<String>,
    /// The PCI function's MSI and MSI-X vectors (`msi_irqs/N`: `msi` or `msix`).
    pub msi: Vec<(u32, String)>,
}

impl Owner {
    /// `None` if the line is not the device's; else how it is delivered: `msix`, `msi`, or
    /// `line` (a wired interrupt: PCI INTx or an ISA IRQ).
    pub fn mode(&self, l: &Line) -> Option<&str> {
        if let Some((_, m)) = self.msi.iter().find(|(irq, _)| *irq == l.irq) {
            return Some(m);
        }
        let ours = l.actions.iter().any(|a| {
            self.names.iter().any(|n| n == a)
                || self.virtio.as_ref().is_some_and(|v| {
                    a == v
                        || a.strip_prefix(v.as_str())
                            .is_some_and(|t| t.starts_with('-'))
                })
        });
        ours.then_some("line")
    }

    /// Reads what names the interrupts of the device at `sys` (`/sys/class/net/eth0`).
    fn of(name: &str, sys: &str) -> Owner {
        let mut o = Owner {
            names: vec![name.to_string()],
            ..Owner::default()
        };
        let Ok(path) = std::fs::canonicalize(format!("{sys}/device")) else {
            return o;
        };
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        o.virtio = parts
            .iter()
            .rev()
            .find(|p| {
                p.strip_prefix("virtio")
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
            .cloned();
        let Some(i) = parts.iter().rposition(|p| is_pci_address(p)) else {
            return o;
        };
        let pci: PathBuf = parts[..=i].iter().collect();
        if let Some(d) = std::fs::read_link(pci.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        {
            o.names.push(d);
        }
        o.msi = msi_vectors(&pci.join("msi_irqs"));
        o
    }
}

/// `0000:00:03.0`.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn msi_vectors(dir: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let irq = e.file_name().to_string_lossy().parse().ok()?;
            let mode = std::fs::read_to_string(e.path()).ok()?.trim().to_string();
            Some((irq, mode))
        })
        .collect()
}

/// Sends an `irq` record for each line of `/proc/interrupts` that belongs to a device under
/// test: `@vmb irq dev=eth0 irq=11 count=42 chip=IO-APIC mode=line action=eth0`.
pub fn report() {
    let devices = std::mem::take(&mut *UNDER_TEST.lock().unwrap_or_else(|e| e.into_inner()));
    if devices.is_empty() {
        return;
    }
    let text = match std::fs::read_to_string("/proc/interrupts") {
        Ok(t) => t,
        Err(e) => {
            Record::new("log")
                .text(&format!("cannot read /proc/interrupts: {e}"))
                .send();
            return;
        }
    };
    let lines = parse(&text);
    for (name, sys) in devices {
        let owner = Owner::of(&name, &sys);
        for l in &lines {
            if let Some(mode) = owner.mode(l) {
                Record::new("irq")
                    .kv("dev", &name)
                    .kv("irq", l.irq)
                    .kv("count", l.count)
                    .kv("chip", &l.chip)
                    .kv("mode", mode)
                    .kv("action", l.actions.join(","))
                    .send();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Debian 6.1 under QEMU (two CPUs), trimmed; and a 6.6-style line with a per-device MSI-X
    // domain.
    const PROC: &str = "           CPU0       CPU1       
  0:         45          0   IO-APIC   2-edge      timer
  1:          9          3   IO-APIC   1-edge      i8042
 11:        120          7   IO-APIC  11-fasteoi   eth0
 14:         60          0   IO-APIC  14-edge      ata_piix
 15:          0          0   IO-APIC  15-edge      ata_piix
 24:          0          0   PCI-MSI 49152-edge      virtio0-config
 25:        300         12   PCI-MSI 49153-edge      virtio0-input.0
 26:          5          0   PCI-MSI 49154-edge      virtio0-output.0
 27:         88          0   PCI-MSIX-0000:00:04.0   1-edge      virtio1-req.0
 28:          1          0   IO-APIC  10-fasteoi   virtio10, uhci_hcd:usb1
 29:          0          0   XT-PIC      -XT-PIC   
NMI:          0          0   Non-maskable interrupts
LOC:       5000       4000   Local timer interrupts
ERR:          0
 30:        junk
";

    #[test]
    fn parses_numbered_lines_summing_the_cpus() {
        let l = parse(PROC);
        assert_eq!(l.len(), 11);
        assert_eq!(
            l[2],
            Line {
                irq: 11,
                count: 127,
                chip: "IO-APIC".into(),
                actions: vec!["eth0".into()],
            }
        );
        assert_eq!(l[6].count, 312);
        assert_eq!(l[6].chip, "PCI-MSI");
        assert_eq!(l[6].actions, ["virtio0-input.0"]);
        assert_eq!(l[8].chip, "PCI-MSIX-0000:00:04.0");
        assert_eq!(l[8].actions, ["virtio1-req.0"]);
        assert_eq!(l[9].actions, ["virtio10", "uhci_hcd:usb1"]);
        assert!(l[10].actions.is_empty(), "{:?}", l[10]);
    }

    #[test]
    fn odd_input_gives_no_lines_and_no_panic() {
        for t in [
            "",
            "\n\n",
            "CPU0\n",
            "CPU0\n 5:\n",
            "CPU0\n 5: 1\n",
            "x:y:z\n:::\n",
        ] {
            assert!(parse(t).is_empty(), "{t:?}");
        }
        // No header: one count per line.
        assert_eq!(parse("junk\n 3: 7 IO-APIC 3-edge eth0\n")[0].count, 7);
    }

    #[test]
    fn a_device_owns_its_vectors_and_handlers_only() {
        let l = parse(PROC);
        let virtio_net = Owner {
            names: vec!["eth0".into(), "virtio-pci".into()],
            virtio: Some("virtio0".into()),
            msi: vec![
                (24, "msix".into()),
                (25, "msix".into()),
                (26, "msix".into()),
            ],
        };
        let mine: Vec<(u32, &str)> = l
            .iter()
            .filter_map(|x| virtio_net.mode(x).map(|m| (x.irq, m)))
            .collect();
        // A handler named after the interface is its own (`eth0` at 11 in this made-up mix);
        // `virtio10` is another device.
        assert_eq!(
            mine,
            [(11, "line"), (24, "msix"), (25, "msix"), (26, "msix")]
        );

        let ide = Owner {
            names: vec!["sda".into(), "ata_piix".into()],
            ..Owner::default()
        };
        let mine: Vec<u32> = l
            .iter()
            .filter(|x| ide.mode(x).is_some())
            .map(|x| x.irq)
            .collect();
        assert_eq!(mine, [14, 15]);

        let virtio_blk = Owner {
            names: vec!["vda".into()],
            virtio: Some("virtio1".into()),
            msi: Vec::new(),
        };
        let mine: Vec<u32> = l
            .iter()
            .filter(|x| virtio_blk.mode(x).is_some())
            .map(|x| x.irq)
            .collect();
        assert_eq!(mine, [27]);
    }

    #[test]
    fn pci_addresses_are_recognised() {
        assert!(is_pci_address("0000:00:03.0"));
        assert!(is_pci_address("0000:0a:1f.7"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("virtio0"));
        assert!(!is_pci_address("0000:00:03"));
    }
}
