//! ELF objects: the writer of egret's relocatable EM_BPF objects and the
//! reader that parses them (and clang-built objects of the same shape) back.
//!
//! Written layout (EBPF-FACTS.md; loaded by aya 0.14 and by plain `bpftool
//! prog loadall OBJ DIR`, libbpf guessing the program type from the section
//! name):
//! - one section per program, each named exactly `classifier` (PROGBITS,
//!   `AX`, align 8; libbpf does not recognise `classifier/<name>`) with
//!   one `STT_FUNC` `GLOBAL` symbol `<name>` at 0 whose size is the code size;
//!   optionally (default on) `STT_NOTYPE` `LOCAL` symbols for the program's
//!   labels, so `llvm-objdump -d` prints `goto +3 <drop>`;
//! - `.rel<section>`: one `R_BPF_64_64` (type 1) per map `ld_imm64`, at
//!   `insn * 8`, against the map's symbol, addend 0 (implicit, REL);
//! - `.maps` (PROGBITS, `WA`, align 8): 40 zero bytes per map, each with an
//!   `STT_OBJECT` `GLOBAL` symbol of size 40 at `index * 40`;
//! - `license` (PROGBITS, `WA`): the license string, NUL-terminated;
//! - `.BTF`: see [`crate::btf`];
//! - `.egret.holes` (PROGBITS, no flags; only when a program has holes): UTF-8
//!   text, first line `egret-holes 2`, then one line per hole,
//!   `<program>\t<insn index>\t<imm32|imm64>\t<name>`, in section order then
//!   slot order (the program's name: its section's name is not unique). Loaders ignore this section; egret's loader fills the holes
//!   ([`fill_holes`]) before it hands the object to aya.
//!
//! Output is deterministic: the same inputs give the same bytes.
//!
//! The reader accepts relocatable little-endian EM_BPF objects with
//! BTF-defined maps: every executable section is split into programs by its
//! `STT_FUNC` symbols, relocations must be `R_BPF_64_64` against symbols in
//! `.maps`, and map definitions come from the `.BTF` DATASEC `.maps`.

use std::collections::BTreeMap;

use object::write::{Object, Relocation, StandardSegment, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, Object as _, ObjectSection as _, ObjectSymbol as _, RelocationFlags,
    RelocationTarget, SectionKind, SymbolFlags, SymbolKind, SymbolScope, elf,
};

use crate::btf::{Btf, BtfError, MAP_DEF_SIZE, maps_btf};
use crate::insn::{INSN_SIZE, insns_from_bytes};
use crate::maps::{MapDef, MapDefError};
use crate::program::{Hole, HoleError, HoleKind, MapReloc, Program, ProgramError};
use crate::verifier::{self, Verified, VerifyErrors};

/// Name of the section that lists holes.
pub const HOLES_SECTION: &str = ".egret.holes";
/// First line of the holes section.
pub const HOLES_HEADER: &str = "egret-holes 2";
/// Default license string (GPL-compatible, so every helper is allowed).
pub const DEFAULT_LICENSE: &str = "Dual MIT/GPL";

/// The name of every program section: exactly `classifier`, which libbpf
/// maps to `BPF_PROG_TYPE_SCHED_CLS` (it cannot guess a type for
/// `classifier/<name>`) and aya 0.14 too. Each program has its own section.
pub const PROGRAM_SECTION: &str = "classifier";

/// Failure to write or read an object.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// An invalid map definition.
    #[error(transparent)]
    Map {
        /// The underlying error.
        #[from]
        source: MapDefError,
    },
    /// Two maps or two programs with one name.
    #[error("duplicate {what} name `{name}`")]
    DuplicateName {
        /// "map" or "program".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A program referencing a map the object does not define (or defines differently).
    #[error("program `{program}` references map `{map}`, which this object {problem}")]
    MapMismatch {
        /// Program name.
        program: String,
        /// Map name.
        map: String,
        /// "does not define" or "defines differently than it was verified with".
        problem: &'static str,
    },
    /// A program whose side tables are inconsistent.
    #[error(transparent)]
    Program {
        /// The underlying error.
        #[from]
        source: ProgramError,
    },
    /// Static verification failed.
    #[error(transparent)]
    Verify {
        /// The underlying error.
        #[from]
        source: VerifyErrors,
    },
    /// The `object` crate failed to write.
    #[error("writing ELF: {reason}")]
    Write {
        /// The writer's message.
        reason: String,
    },
    /// The input is not an object egret can read.
    #[error("reading ELF: {reason}")]
    Read {
        /// What is wrong.
        reason: String,
    },
    /// `.BTF` problems.
    #[error(transparent)]
    Btf {
        /// The underlying error.
        #[from]
        source: BtfError,
    },
    /// Filling holes failed.
    #[error(transparent)]
    Hole {
        /// The underlying error.
        #[from]
        source: HoleError,
    },
}

fn read_err(reason: impl Into<String>) -> ElfError {
    ElfError::Read { reason: reason.into() }
}

/// Options of the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Emit program labels as local symbols (for readable `llvm-objdump` output).
    pub label_symbols: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { label_symbols: true }
    }
}

/// An object being assembled from maps and programs.
///
/// Programs enter through [`ObjectWriter::add_program`], which takes only a
/// [`Verified`] program (made by [`crate::verifier::verify`]), so an object
/// cannot contain a program the static verifier has not accepted against the
/// same map definitions. [`ObjectWriter::add_unverified_program`] exists for
/// tools and tests that write arbitrary bytes (e.g. the disassembler cross-check).
#[derive(Debug, Clone)]
pub struct ObjectWriter {
    maps: Vec<MapDef>,
    programs: Vec<Program>,
    license: String,
    options: WriteOptions,
}

impl ObjectWriter {
    /// A writer for an object with these maps (laid out in `.maps` in order).
    ///
    /// # Errors
    /// An invalid map or a duplicate map name.
    pub fn new(maps: Vec<MapDef>, license: &str) -> Result<ObjectWriter, ElfError> {
        for (i, m) in maps.iter().enumerate() {
            m.validate()?;
            if maps[..i].iter().any(|o| o.name == m.name) {
                return Err(ElfError::DuplicateName { what: "map", name: m.name.clone() });
            }
        }
        Ok(ObjectWriter { maps, programs: Vec::new(), license: license.to_owned(), options: WriteOptions::default() })
    }

    /// Sets writer options.
    #[must_use]
    pub fn with_options(mut self, options: WriteOptions) -> ObjectWriter {
        self.options = options;
        self
    }

    /// The maps.
    #[must_use]
    pub fn maps(&self) -> &[MapDef] {
        &self.maps
    }

    /// Adds a verified program.
    ///
    /// # Errors
    /// A duplicate program name, or a map the program was verified with that
    /// this object does not define identically.
    pub fn add_program(&mut self, verified: &Verified) -> Result<(), ElfError> {
        let p = verified.program();
        for used in verified.maps() {
            match self.maps.iter().find(|m| m.name == used.name) {
                None => {
                    return Err(ElfError::MapMismatch {
                        program: p.name.clone(),
                        map: used.name.clone(),
                        problem: "does not define",
                    });
                }
                Some(m) if m != used => {
                    return Err(ElfError::MapMismatch {
                        program: p.name.clone(),
                        map: used.name.clone(),
                        problem: "defines differently than it was verified with",
                    });
                }
                Some(_) => {}
            }
        }
        self.push(p.clone())
    }

    /// Adds a program without static verification (tools and tests only).
    ///
    /// # Errors
    /// A duplicate name, inconsistent side tables, or an undefined map.
    pub fn add_unverified_program(&mut self, program: Program) -> Result<(), ElfError> {
        program.validate()?;
        for map in program.referenced_maps() {
            if !self.maps.iter().any(|m| m.name == map) {
                return Err(ElfError::MapMismatch {
                    program: program.name.clone(),
                    map: map.to_owned(),
                    problem: "does not define",
                });
            }
        }
        self.push(program)
    }

    fn push(&mut self, program: Program) -> Result<(), ElfError> {
        if self.programs.iter().any(|p| p.name == program.name) {
            return Err(ElfError::DuplicateName { what: "program", name: program.name });
        }
        if !crate::maps::is_identifier(&program.name) || program.name.contains('.') {
            return Err(ElfError::Write { reason: format!("program name `{}` is not a C identifier", program.name) });
        }
        self.programs.push(program);
        Ok(())
    }

    /// Writes the object.
    ///
    /// # Errors
    /// [`ElfError::Write`] if the `object` crate fails.
    pub fn write(&self) -> Result<Vec<u8>, ElfError> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
        let mut prog_sections = Vec::new();
        for p in &self.programs {
            let sec = obj.add_section(
                obj.segment_name(StandardSegment::Text).to_vec(),
                PROGRAM_SECTION.as_bytes().to_vec(),
                SectionKind::Text,
            );
            obj.section_mut(sec).set_data(p.bytes(), 8);
            obj.add_symbol(Symbol {
                name: p.name.clone().into_bytes(),
                value: 0,
                size: (p.insns.len() * INSN_SIZE) as u64,
                kind: SymbolKind::Text,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(sec),
                flags: SymbolFlags::None,
            });
            if self.options.label_symbols {
                for (at, name) in p.label_symbols() {
                    obj.add_symbol(Symbol {
                        name: name.as_bytes().to_vec(),
                        value: (at * INSN_SIZE) as u64,
                        size: 0,
                        kind: SymbolKind::Label,
                        scope: SymbolScope::Compilation,
                        weak: false,
                        section: SymbolSection::Section(sec),
                        flags: SymbolFlags::None,
                    });
                }
            }
            prog_sections.push(sec);
        }
        let mut map_syms = BTreeMap::new();
        // no `.maps` section without maps: aya refuses a `.maps` without symbols
        let maps_sec = (!self.maps.is_empty()).then(|| {
            let sec = obj.add_section(Vec::new(), b".maps".to_vec(), SectionKind::Data);
            obj.section_mut(sec).set_data(vec![0u8; self.maps.len() * MAP_DEF_SIZE as usize], 8);
            sec
        });
        for (i, m) in self.maps.iter().enumerate() {
            let Some(maps_sec) = maps_sec else { break };
            let id = obj.add_symbol(Symbol {
                name: m.name.clone().into_bytes(),
                value: i as u64 * u64::from(MAP_DEF_SIZE),
                size: u64::from(MAP_DEF_SIZE),
                kind: SymbolKind::Data,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(maps_sec),
                flags: SymbolFlags::None,
            });
            map_syms.insert(m.name.clone(), id);
        }
        for (p, sec) in self.programs.iter().zip(&prog_sections) {
            for r in &p.map_relocs {
                let Some(&symbol) = map_syms.get(&r.map) else {
                    return Err(ElfError::MapMismatch {
                        program: p.name.clone(),
                        map: r.map.clone(),
                        problem: "does not define",
                    });
                };
                obj.add_relocation(
                    *sec,
                    Relocation {
                        offset: (r.insn * INSN_SIZE) as u64,
                        symbol,
                        addend: 0,
                        flags: RelocationFlags::Elf { r_type: elf::R_BPF_64_64 },
                    },
                )
                .map_err(|e| ElfError::Write { reason: e.to_string() })?;
            }
        }
        let lic = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
        let mut lic_data = self.license.clone().into_bytes();
        lic_data.push(0);
        obj.section_mut(lic).set_data(lic_data, 1);
        let btf = obj.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::Metadata);
        obj.section_mut(btf).set_data(maps_btf(&self.maps), 4);
        let holes = holes_text(&self.programs);
        if let Some(text) = holes {
            let hs = obj.add_section(Vec::new(), HOLES_SECTION.as_bytes().to_vec(), SectionKind::Metadata);
            obj.section_mut(hs).set_data(text.into_bytes(), 1);
        }
        obj.write().map_err(|e| ElfError::Write { reason: e.to_string() })
    }
}

fn holes_text(programs: &[Program]) -> Option<String> {
    if programs.iter().all(|p| p.holes.is_empty()) {
        return None;
    }
    let mut s = format!("{HOLES_HEADER}\n");
    for p in programs {
        let mut holes = p.holes.clone();
        holes.sort_by_key(|h| h.insn);
        for h in holes {
            s.push_str(&format!("{}\t{}\t{}\t{}\n", p.name, h.insn, h.kind.name(), h.name));
        }
    }
    Some(s)
}

/// Verifies every program against `maps` and writes the object: the one call
/// a code generator needs.
///
/// # Errors
/// Verification failures (all of them, for every program), invalid maps, or
/// writer failures.
pub fn verify_and_write(programs: &[Program], maps: &[MapDef], license: &str) -> Result<Vec<u8>, ElfError> {
    let mut w = ObjectWriter::new(maps.to_vec(), license)?;
    let mut all = Vec::new();
    let mut verified = Vec::new();
    for p in programs {
        match verifier::verify(p, maps) {
            Ok(v) => verified.push(v),
            Err(e) => all.extend(e.violations),
        }
    }
    if !all.is_empty() {
        return Err(ElfError::Verify { source: VerifyErrors { violations: all } });
    }
    for v in &verified {
        w.add_program(v)?;
    }
    w.write()
}

/// A program read back from an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectProgram {
    /// Its section's name ([`PROGRAM_SECTION`] in egret's objects).
    pub section: String,
    /// The program, with map references, holes and labels.
    pub program: Program,
}

/// An object read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedObject {
    /// Programs in section order.
    pub programs: Vec<ObjectProgram>,
    /// Maps in `.maps` order.
    pub maps: Vec<MapDef>,
    /// The license string.
    pub license: String,
}

impl ParsedObject {
    /// The program called `name`.
    #[must_use]
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().map(|p| &p.program).find(|p| p.name == name)
    }

    /// Re-writes the object (label symbols on), e.g. after filling holes.
    ///
    /// # Errors
    /// See [`ObjectWriter`].
    pub fn write_unverified(&self) -> Result<Vec<u8>, ElfError> {
        let mut w = ObjectWriter::new(self.maps.clone(), &self.license)?;
        for p in &self.programs {
            w.add_unverified_program(p.program.clone())?;
        }
        w.write()
    }
}

/// Parses an object.
///
/// # Errors
/// [`ElfError::Read`] for anything but a relocatable little-endian EM_BPF
/// object of the supported shape; [`ElfError::Btf`] for bad map BTF.
pub fn read_object(data: &[u8]) -> Result<ParsedObject, ElfError> {
    let file = object::File::parse(data).map_err(|e| read_err(e.to_string()))?;
    if file.architecture() != Architecture::Bpf {
        return Err(read_err(format!("architecture {:?}, not BPF", file.architecture())));
    }
    if !file.is_little_endian() {
        return Err(read_err("big-endian objects are not supported"));
    }
    if file.kind() != object::ObjectKind::Relocatable {
        return Err(read_err("not a relocatable object"));
    }
    let license = match file.section_by_name("license") {
        Some(s) => {
            let d = s.data().map_err(|e| read_err(e.to_string()))?;
            let end = d.iter().position(|b| *b == 0).unwrap_or(d.len());
            String::from_utf8_lossy(&d[..end]).into_owned()
        }
        None => String::new(),
    };
    let maps_section = file.section_by_name(".maps").map(|s| s.index());
    let maps = match file.section_by_name(".BTF") {
        Some(s) => {
            let btf = Btf::parse(s.data().map_err(|e| read_err(e.to_string()))?)?;
            match btf.maps() {
                Ok(m) => m,
                Err(BtfError::NoMapsDatasec) if maps_section.is_none() => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        }
        None if maps_section.is_some() => {
            return Err(read_err("`.maps` without `.BTF`"));
        }
        None => Vec::new(),
    };
    // map symbols by name → offset; verify against the BTF DATASEC
    let mut map_by_sym_index = BTreeMap::new();
    for sym in file.symbols() {
        if Some(sym.section_index()).flatten() == maps_section && maps_section.is_some() {
            let name = sym.name().map_err(|e| read_err(e.to_string()))?;
            if sym.kind() == SymbolKind::Section || name.is_empty() {
                continue;
            }
            if !maps.iter().any(|(_, m)| m.name == name) {
                return Err(read_err(format!("symbol `{name}` in `.maps` has no BTF definition")));
            }
            map_by_sym_index.insert(sym.index().0, name.to_owned());
        }
    }
    let maps: Vec<MapDef> = maps.into_iter().map(|(_, m)| m).collect();

    let holes = match file.section_by_name(HOLES_SECTION) {
        Some(s) => parse_holes(s.data().map_err(|e| read_err(e.to_string()))?)?,
        None => Vec::new(),
    };

    let mut programs = Vec::new();
    for section in file.sections() {
        let is_exec = matches!(
            section.flags(),
            object::SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & elf::SHF_EXECINSTR.0 != 0
        );
        if !is_exec || section.size() == 0 {
            continue;
        }
        let sec_name = section.name().map_err(|e| read_err(e.to_string()))?.to_owned();
        let data = section.data().map_err(|e| read_err(e.to_string()))?;
        let slots = insns_from_bytes(data).map_err(|e| read_err(format!("{sec_name}: {e}")))?;
        let mut funcs: Vec<(usize, usize, String)> = Vec::new();
        let mut labels: Vec<(usize, String)> = Vec::new();
        for sym in file.symbols() {
            if sym.section_index() != Some(section.index()) {
                continue;
            }
            let name = sym.name().map_err(|e| read_err(e.to_string()))?.to_owned();
            let at = sym.address() as usize;
            if !at.is_multiple_of(INSN_SIZE) {
                return Err(read_err(format!("symbol `{name}` is not slot-aligned")));
            }
            match sym.kind() {
                SymbolKind::Text => {
                    if at > data.len() {
                        return Err(read_err(format!("function `{name}` starts past its section")));
                    }
                    let size = if sym.size() == 0 { data.len() - at } else { sym.size() as usize };
                    funcs.push((at / INSN_SIZE, size / INSN_SIZE, name));
                }
                SymbolKind::Label | SymbolKind::Unknown if !name.is_empty() => {
                    labels.push((at / INSN_SIZE, name));
                }
                _ => {}
            }
        }
        funcs.sort();
        if funcs.is_empty() {
            return Err(read_err(format!("section `{sec_name}` has no function symbol")));
        }
        let mut relocs: BTreeMap<usize, String> = BTreeMap::new();
        for (off, rel) in section.relocations() {
            let r_type = match rel.flags() {
                RelocationFlags::Elf { r_type } => r_type.0,
                _ => 0,
            };
            if r_type != elf::R_BPF_64_64.0 {
                return Err(read_err(format!("{sec_name}: unsupported relocation type {r_type} at {off:#x}")));
            }
            let RelocationTarget::Symbol(sym) = rel.target() else {
                return Err(read_err(format!("{sec_name}: relocation at {off:#x} has no symbol")));
            };
            let Some(map) = map_by_sym_index.get(&sym.0) else {
                return Err(read_err(format!("{sec_name}: relocation at {off:#x} is not against a map in `.maps`")));
            };
            if off % INSN_SIZE as u64 != 0 {
                return Err(read_err(format!("{sec_name}: relocation at {off:#x} is not slot-aligned")));
            }
            relocs.insert(off as usize / INSN_SIZE, map.clone());
        }
        for (start, len, name) in funcs {
            let end = start.saturating_add(len).min(slots.len());
            let mut p = Program::new(&name, slots[start..end].to_vec());
            p.map_relocs =
                relocs.range(start..end).map(|(at, map)| MapReloc { insn: at - start, map: map.clone() }).collect();
            p.labels = labels
                .iter()
                .filter(|(at, _)| (start..end).contains(at))
                .map(|(at, n)| (at - start, n.clone()))
                .collect();
            p.holes = holes.iter().filter(|(program, _)| *program == name).map(|(_, h)| h.clone()).collect();
            p.validate()?;
            programs.push(ObjectProgram { section: sec_name.clone(), program: p });
        }
    }
    Ok(ParsedObject { programs, maps, license })
}

fn parse_holes(data: &[u8]) -> Result<Vec<(String, Hole)>, ElfError> {
    let text = std::str::from_utf8(data).map_err(|_| read_err("holes section is not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(HOLES_HEADER) {
        return Err(read_err(format!("holes section does not start with `{HOLES_HEADER}`")));
    }
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || read_err(format!("holes section line {}: `{line}`", n + 2));
        let [program, insn, kind, name] = f.as_slice() else {
            return Err(bad());
        };
        out.push((
            (*program).to_owned(),
            Hole {
                name: (*name).to_owned(),
                insn: insn.parse().map_err(|_| bad())?,
                kind: HoleKind::from_name(kind).ok_or_else(bad)?,
            },
        ));
    }
    Ok(out)
}

/// Fills holes in an object's bytes and returns the re-written object (with
/// no `.egret.holes` section left). `values` may hold names no hole uses.
///
/// # Errors
/// Parse failures, a hole without a value, or a value that does not fit.
pub fn fill_holes(data: &[u8], values: &BTreeMap<String, i64>) -> Result<Vec<u8>, ElfError> {
    let mut parsed = read_object(data)?;
    for p in &mut parsed.programs {
        p.program.fill_holes(values)?;
    }
    parsed.write_unverified()
}
