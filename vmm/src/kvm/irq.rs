//! GSI routing: the default irqchip routes (PIC and IOAPIC pins, as KVM sets them up) plus one
//! MSI route per device vector, each fed by an irqfd, so a device worker raises an MSI-X
//! interrupt with one eventfd write and no exit of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// GSIs 0-23 are the IOAPIC pins; MSI routes start above them.
const FIRST_MSI_GSI: u32 = 24;
const MAX_GSI: u32 = 1023;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("out of GSIs for MSI routes")]
    Exhausted,
    #[error("cannot program KVM's GSI routing")]
    Routing(#[source] kvm_ioctls::Error),
    #[error("cannot register an irqfd")]
    Irqfd(#[source] kvm_ioctls::Error),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi(gsi: u32, addr: u64, data: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = addr as u32;
    e.u.msi.address_hi = (addr >> 32) as u32;
    e.u.msi.data = data;
    e
}

/// The routes KVM installs by default with an in-kernel irqchip: GSI 0-15 to the PICs and the
/// IOAPIC, 16-23 to the IOAPIC only. Replacing the table must keep them.
fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..24 {
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            v.push(irqchip(gsi, chip, gsi % 8));
        }
        v.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

pub struct GsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<RouterState>,
}

struct RouterState {
    next: u32,
    /// MSI routes by GSI: None while the vector is unprogrammed (or masked).
    msi: BTreeMap<u32, Option<(u64, u32)>>,
}

impl GsiRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        GsiRouter {
            vm,
            state: Mutex::new(RouterState {
                next: FIRST_MSI_GSI,
                msi: BTreeMap::new(),
            }),
        }
    }

    /// Allocates a GSI with an irqfd; the route stays unprogrammed until `set_msi`.
    pub fn allocate(&self) -> Result<(u32, EventFd), Error> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.next > MAX_GSI {
            return Err(Error::Exhausted);
        }
        let gsi = s.next;
        s.next += 1;
        s.msi.insert(gsi, None);
        let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        self.vm.register_irqfd(&fd, gsi).map_err(Error::Irqfd)?;
        Ok((gsi, fd))
    }

    /// Points `gsi` at the MSI message `(addr, data)`, or removes its route (`None`).
    pub fn set_msi(&self, gsi: u32, route: Option<(u64, u32)>) -> Result<(), Error> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.msi.get(&gsi) == Some(&route) {
            return Ok(());
        }
        s.msi.insert(gsi, route);
        let mut entries = default_routes();
        entries.extend(
            s.msi
                .iter()
                .filter_map(|(&g, r)| r.map(|(a, d)| msi(g, a, d))),
        );
        let table = KvmIrqRouting::from_entries(&entries).map_err(|_| Error::Exhausted)?;
        self.vm.set_gsi_routing(&table).map_err(Error::Routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_cover_pic_and_ioapic_pins() {
        let r = default_routes();
        assert_eq!(r.len(), 16 * 2 + 8);
        let ioapic: Vec<u32> = r
            .iter()
            // SAFETY: every entry built by default_routes is an irqchip route.
            .filter(|e| unsafe { e.u.irqchip.irqchip } == KVM_IRQCHIP_IOAPIC)
            .map(|e| e.gsi)
            .collect();
        assert_eq!(ioapic, (0..24).collect::<Vec<_>>());
    }
}
