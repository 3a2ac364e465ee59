//! The public surface of each kiln library crate, listed from its source and compared with the
//! committed `api/<crate>.txt`, so a change to what users can name is a visible decision in review
//! (the role `cargo semver-checks` plays for a published crate; this needs no baseline release).
//! `.ci/crates` runs it; after a deliberate change:
//!
//! ```text
//! cargo run --manifest-path tools/public-api/Cargo.toml -- bless
//! ```
//!
//! and commit the listing with the change. A project of its own (syn is not in kiln's build).
//!
//! What is listed: public modules, functions with their signatures, structs with their public
//! fields, enums with their variants, traits with their items, constants, statics, type aliases,
//! re-exports, exported macros, the public methods of inherent impls and the trait impls of the
//! crate's public types. Items behind `#[cfg(test)]`/`#[cfg(doctest)]` are not; items behind
//! another `cfg` carry it. Items a `macro_rules!` expands to (the model registry's `ModelConfig`
//! methods) cannot be seen from the source and are not listed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use quote::ToTokens;
use syn::{Attribute, ImplItem, Item, TraitItem, Visibility};

const CRATES: [&str; 4] = ["kiln-data", "kiln-transforms", "kiln-models", "kiln-train"];

fn main() -> Result<()> {
    let bless = match std::env::args().nth(1).as_deref() {
        None | Some("check") => false,
        Some("bless") => true,
        Some(other) => bail!("usage: public-api [check|bless] (got {other:?})"),
    };
    // The repository around the working directory, not the one this binary was built in: clones
    // sharing a target directory reuse one build of this tool (cargo hashes path packages by
    // their path inside the workspace), and a compile-time path would list another clone.
    let cwd = std::env::current_dir()?;
    let root = cwd
        .ancestors()
        .find(|d| d.join("tools/public-api/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is not inside the kiln repository", cwd.display()))?;
    let mut failures = Vec::new();
    for name in CRATES {
        let listing = list_crate(
            &root.join("crates").join(name).join("src"),
            &name.replace('-', "_"),
        )?;
        let text = format!(
            "# The public surface of {name}, listed by tools/public-api.\n\
             # After a deliberate change: cargo run --manifest-path tools/public-api/Cargo.toml -- bless\n{}\n",
            listing.join("\n")
        );
        let committed = root.join("api").join(format!("{name}.txt"));
        if bless {
            std::fs::create_dir_all(committed.parent().context("api/ has a parent")?)?;
            std::fs::write(&committed, &text).with_context(|| committed.display().to_string())?;
            println!("wrote {}", committed.display());
            continue;
        }
        let old = std::fs::read_to_string(&committed).unwrap_or_default();
        if old != text {
            let old: BTreeSet<&str> = old.lines().collect();
            let new: BTreeSet<&str> = text.lines().collect();
            let mut diff = String::new();
            for line in old.difference(&new) {
                diff += &format!("  - {line}\n");
            }
            for line in new.difference(&old) {
                diff += &format!("  + {line}\n");
            }
            failures.push(format!("{name} ({}):\n{diff}", committed.display()));
        } else {
            println!("{name}: {} public items, as committed", listing.len());
        }
    }
    if !failures.is_empty() {
        bail!(
            "the public surface changed; if that is deliberate, run \
             `cargo run --manifest-path tools/public-api/Cargo.toml -- bless` and commit api/:\n{}",
            failures.join("\n")
        );
    }
    Ok(())
}

/// The listing of one crate, sorted.
fn list_crate(src: &Path, krate: &str) -> Result<Vec<String>> {
    let lib = src.join("lib.rs");
    let file = parse(&lib)?;
    let mut public_types = BTreeSet::new();
    collect_types(&file.items, src, &mut public_types)?;
    let mut out = Vec::new();
    list_items(&file.items, krate, src, &public_types, &mut out)?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse(path: &Path) -> Result<syn::File> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The items of `mod name;` declared in a file whose child modules live in `dir`, and the folder
/// the module's own children live in.
fn module_items(m: &syn::ItemMod, dir: &Path) -> Result<(Vec<Item>, PathBuf)> {
    let child_dir = dir.join(m.ident.to_string());
    if let Some((_, items)) = &m.content {
        return Ok((items.clone(), child_dir));
    }
    let flat = dir.join(format!("{}.rs", m.ident));
    let nested = child_dir.join("mod.rs");
    let path = if flat.exists() { flat } else { nested };
    Ok((parse(&path)?.items, child_dir))
}

fn is_pub(vis: &Visibility) -> bool {
    matches!(vis, Visibility::Public(_))
}

/// `None` for items compiled only in tests; otherwise the `cfg` prefix the line carries.
fn cfg_prefix(attrs: &[Attribute]) -> Option<String> {
    let mut prefix = String::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("cfg")) {
        let text = tidy(&attr.meta.to_token_stream().to_string());
        if text.contains("test") {
            return None;
        }
        prefix += &format!("#[{text}] ");
    }
    Some(prefix)
}

/// Every public type name of public modules (trait impls are listed for these only).
fn collect_types(items: &[Item], dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    for item in items {
        match item {
            Item::Struct(s) if is_pub(&s.vis) => {
                out.insert(s.ident.to_string());
            }
            Item::Enum(e) if is_pub(&e.vis) => {
                out.insert(e.ident.to_string());
            }
            Item::Mod(m) if is_pub(&m.vis) && cfg_prefix(&m.attrs).is_some() => {
                let (items, child_dir) = module_items(m, dir)?;
                collect_types(&items, &child_dir, out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn list_items(
    items: &[Item],
    path: &str,
    dir: &Path,
    public_types: &BTreeSet<String>,
    out: &mut Vec<String>,
) -> Result<()> {
    for item in items {
        let Some(cfg) = cfg_prefix(attrs(item)) else {
            continue;
        };
        match item {
            Item::Mod(m) if is_pub(&m.vis) => {
                let p = format!("{path}::{}", m.ident);
                out.push(format!("{cfg}mod {p}"));
                let (items, child_dir) = module_items(m, dir)?;
                list_items(&items, &p, &child_dir, public_types, out)?;
            }
            Item::Fn(f) if is_pub(&f.vis) => out.push(format!("{cfg}{}", signature(&f.sig, path))),
            Item::Struct(s) if is_pub(&s.vis) => {
                let name = format!("{path}::{}{}", s.ident, tokens(&s.generics));
                out.push(format!("{cfg}struct {name}"));
                for (i, field) in s.fields.iter().enumerate().filter(|(_, f)| is_pub(&f.vis)) {
                    let field_name = field.ident.as_ref().map_or(i.to_string(), |id| id.to_string());
                    out.push(format!(
                        "{cfg}field {path}::{}.{field_name}: {}",
                        s.ident,
                        tokens(&field.ty)
                    ));
                }
            }
            Item::Enum(e) if is_pub(&e.vis) => {
                out.push(format!("{cfg}enum {path}::{}{}", e.ident, tokens(&e.generics)));
                for v in &e.variants {
                    let v_cfg = cfg_prefix(&v.attrs).unwrap_or_default();
                    out.push(format!(
                        "{cfg}{v_cfg}variant {path}::{}::{}{}",
                        e.ident,
                        v.ident,
                        tokens(&v.fields)
                    ));
                }
            }
            Item::Trait(t) if is_pub(&t.vis) => {
                let supertraits = if t.supertraits.is_empty() {
                    String::new()
                } else {
                    format!(": {}", tokens(&t.supertraits))
                };
                let name = format!("{path}::{}", t.ident);
                out.push(format!("{cfg}trait {name}{}{supertraits}", tokens(&t.generics)));
                for ti in &t.items {
                    match ti {
                        TraitItem::Fn(f) => {
                            let provided = if f.default.is_some() { " (provided)" } else { "" };
                            out.push(format!("{cfg}{}{provided}", signature(&f.sig, &name)));
                        }
                        TraitItem::Type(ty) => out.push(format!("{cfg}type {name}::{}", ty.ident)),
                        TraitItem::Const(c) => {
                            out.push(format!("{cfg}const {name}::{}: {}", c.ident, tokens(&c.ty)))
                        }
                        _ => {}
                    }
                }
            }
            Item::Const(c) if is_pub(&c.vis) => {
                out.push(format!("{cfg}const {path}::{}: {}", c.ident, tokens(&c.ty)))
            }
            Item::Static(s) if is_pub(&s.vis) => {
                out.push(format!("{cfg}static {path}::{}: {}", s.ident, tokens(&s.ty)))
            }
            Item::Type(t) if is_pub(&t.vis) => out.push(format!(
                "{cfg}type {path}::{}{} = {}",
                t.ident,
                tokens(&t.generics),
                tokens(&t.ty)
            )),
            Item::Use(u) if is_pub(&u.vis) => out.push(format!("{cfg}use {path}: {}", tokens(&u.tree))),
            Item::Macro(m) if m.attrs.iter().any(|a| a.path().is_ident("macro_export")) => {
                let name = m.ident.as_ref().map(|i| i.to_string()).unwrap_or_default();
                out.push(format!("{cfg}macro {name}!"));
            }
            Item::Impl(imp) => {
                let self_ty = tokens(&imp.self_ty);
                let base = self_ty
                    .split('<')
                    .next()
                    .unwrap_or_default()
                    .rsplit("::")
                    .next()
                    .unwrap_or_default();
                if !public_types.contains(base) {
                    continue;
                }
                let generics = tokens(&imp.generics);
                if let Some((_, trait_path, _)) = &imp.trait_ {
                    out.push(format!(
                        "{cfg}impl{generics} {} for {self_ty}",
                        tokens(trait_path)
                    ));
                    continue;
                }
                for ii in &imp.items {
                    match ii {
                        ImplItem::Fn(f) if is_pub(&f.vis) => {
                            let Some(f_cfg) = cfg_prefix(&f.attrs) else {
                                continue;
                            };
                            out.push(format!(
                                "{cfg}{f_cfg}{}",
                                signature(&f.sig, &format!("{path}::{self_ty}"))
                            ))
                        }
                        ImplItem::Const(c) if is_pub(&c.vis) => out.push(format!(
                            "{cfg}const {path}::{self_ty}::{}: {}",
                            c.ident,
                            tokens(&c.ty)
                        )),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// `fn path::name<generics>(inputs) -> output where ...`.
fn signature(sig: &syn::Signature, path: &str) -> String {
    let mut s = sig.clone();
    let name = format!("{path}::{}", s.ident);
    s.ident = syn::Ident::new("__item", s.ident.span());
    tidy(&s.to_token_stream().to_string()).replacen("__item", &name, 1)
}

fn tokens(t: &impl ToTokens) -> String {
    tidy(&t.to_token_stream().to_string())
}

/// Token-stream spacing made readable: `Vec < u8 >` → `Vec<u8>`, `& self` → `&self`.
fn tidy(s: &str) -> String {
    let mut out = s.to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        (" (", "("),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
        (" :", ":"),
        ("# [", "#["),
        ("' ", "'"),
        ("! (", "!("),
        ("- >", "->"),
        ("= >", "=>"),
        (",)", ")"),
        ("? ", "?"),
    ] {
        while out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out.replace("->", " -> ").replace("=(", "= (").replace("  ", " ")
}
