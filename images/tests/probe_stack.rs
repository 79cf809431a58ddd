//! The probe takes interrupts at CPL3 on its own stack (images/probe/src/irq.rs): the CPU
//! pushes the interrupt's frame just below the interrupted RSP, so no code in the probe may
//! keep anything there (the System V red zone). The probe's own crates are built with
//! `-C no-redzone`; the precompiled `core` and `compiler_builtins` linked into it are not, so
//! this checks the linked binary itself: no instruction addresses memory at a negative
//! displacement from RSP (what red-zone code looks like). A `core` function that starts using its red zone fails here, with
//! its name, before it corrupts a run.

use std::process::Command;

#[test]
fn no_code_in_the_probe_addresses_memory_below_its_stack_pointer() {
    let manifest = images::probe::build(&mut |_| {}).expect("build the probe");
    let elf = &manifest
        .artifacts
        .iter()
        .find(|a| a.name == "probe.elf")
        .expect("the probe's manifest names probe.elf")
        .path;
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(elf)
        .output()
        .unwrap_or_else(|e| panic!("objdump: {e}: install binutils (bash .ci/setup)"));
    assert!(out.status.success(), "objdump -d {}", elf.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut function = "";
    let mut instructions = 0;
    let mut below = Vec::new();
    for line in text.lines() {
        if line.ends_with(">:") {
            function = line;
            continue;
        }
        if !line.starts_with("  ") {
            continue;
        }
        instructions += 1;
        // AT&T syntax: `-0x18(%rsp)`. (An indexed operand, `-0x18(%rsp,%rax,2)`, is an array
        // in the frame: the compiler emits those for locals above RSP.)
        if line
            .split([' ', ','])
            .any(|t| t.starts_with("-0x") && t.ends_with("(%rsp)"))
        {
            below.push(format!("{function}\n{line}"));
        }
    }
    assert!(
        instructions > 1000,
        "objdump printed no code:\n{text:.2000}"
    );
    assert!(
        below.is_empty(),
        "code addressing memory below RSP, where an interrupt's frame would land:\n{}",
        below.join("\n")
    );
}
