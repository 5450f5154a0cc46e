//! The image commands, over the store and registry client of vessel-image.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use vessel_image::reference::Reference;
use vessel_image::registry::{self, RegistryOptions};
use vessel_image::store::{ImageRecord, ImportConfig, Store};

use crate::cli::{Global, RegistryArgs};
use crate::output::{age, emit, human_size, table};
use serde_json::json;

pub fn open_store(g: &Global) -> Result<Store> {
    Store::open(&g.root).with_context(|| format!("Cannot open the image store at {}", g.root.display()))
}

/// "registry/repo:tag" → ("registry/repo", "tag").
fn split_name(name: &str) -> (String, String) {
    let (base, digest) = name
        .split_once('@')
        .map(|(b, d)| (b, Some(d)))
        .unwrap_or((name, None));
    let slash = base.rfind('/').map(|i| i + 1).unwrap_or(0);
    match base[slash..].rfind(':') {
        Some(i) => (base[..slash + i].to_string(), base[slash + i + 1..].to_string()),
        None => (base.to_string(), digest.unwrap_or("<none>").to_string()),
    }
}

fn short_id(image: &ImageRecord) -> String {
    let s = image.config.to_string();
    s.trim_start_matches("sha256:").chars().take(12).collect()
}

pub fn list(g: &Global) -> Result<()> {
    let store = open_store(g)?;
    let images = store.list()?;
    match g.format.as_str() {
        "json" => {
            let v: Vec<serde_json::Value> = images
                .iter()
                .map(|i| {
                    let (repo, tag) = split_name(&i.name);
                    serde_json::json!({
                        "name": i.name, "repository": repo, "tag": tag, "id": i.config.to_string(),
                        "manifest": i.manifest.to_string(), "created": i.created, "size": i.size,
                    })
                })
                .collect();
            crate::output::out(serde_json::to_string_pretty(&v)?);
        }
        "table" => {
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    let (repo, tag) = split_name(&i.name);
                    vec![
                        repo,
                        tag,
                        short_id(i),
                        age(i.created.as_deref()),
                        human_size(i.size),
                    ]
                })
                .collect();
            table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
        }
        other => return Err(anyhow!("Unknown format {other:?}: use table or json")),
    }
    Ok(())
}

pub fn inspect(g: &Global, names: &[String]) -> Result<()> {
    let store = open_store(g)?;
    let mut out = Vec::new();
    for n in names {
        let image = store.find(n)?;
        let manifest = store.manifest(&image)?;
        let config = store.config(&image)?;
        out.push(serde_json::json!({
            "Name": image.name, "Id": image.config.to_string(), "Digest": image.manifest.to_string(),
            "Created": image.created, "Size": image.size, "Manifest": manifest, "Config": config,
        }));
    }
    crate::output::out(serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn remove(g: &Global, names: &[String]) -> Result<()> {
    let store = open_store(g)?;
    for n in names {
        store.remove(n)?;
    }
    let text: Vec<String> = names.iter().map(|n| format!("Untagged: {n}")).collect();
    emit(g, text.join("\n"), json!({ "untagged": names }));
    Ok(())
}

pub fn prune(g: &Global) -> Result<()> {
    let r = open_store(g)?.prune()?;
    let text = format!(
        "Removed {} blobs and {} unpacked layers, freed {}",
        r.blobs_removed,
        r.layers_removed,
        human_size(r.bytes_freed)
    );
    emit(g, text, serde_json::to_value(&r)?);
    Ok(())
}

pub fn unpack(g: &Global, names: &[String]) -> Result<()> {
    let store = open_store(g)?;
    let mut text = Vec::new();
    let mut out = Vec::new();
    for n in names {
        let image = store.find(n)?;
        let dirs = store.layer_dirs(&image)?;
        text.push(format!("{}: {} layers", image.name, dirs.len()));
        out.push(json!({ "name": image.name, "layers": dirs }));
    }
    emit(g, text.join("\n"), json!(out));
    Ok(())
}

pub fn tag(g: &Global, image: &str, name: &str) -> Result<()> {
    open_store(g)?.tag(image, name)?;
    emit(g, "", json!({ "tagged": image, "name": name }));
    Ok(())
}

pub fn save(g: &Global, names: &[String], output: &Path) -> Result<()> {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    open_store(g)?.save(&refs, output)?;
    emit(g, "", json!({ "saved": names, "output": output }));
    Ok(())
}

/// The one-line summary of an image, and its JSON.
fn image_out(image: &ImageRecord) -> (String, serde_json::Value) {
    let v =
        json!({ "name": image.name, "id": image.config.to_string(), "digest": image.manifest.to_string() });
    (image.config.to_string(), v)
}

pub fn load(g: &Global, input: &Path) -> Result<()> {
    let images = open_store(g)?.load(input)?;
    let text: Vec<String> = images
        .iter()
        .map(|i| format!("Loaded image: {}", i.name))
        .collect();
    let v: Vec<serde_json::Value> = images.iter().map(|i| image_out(i).1).collect();
    emit(g, text.join("\n"), json!(v));
    Ok(())
}

/// Dockerfile-style `--change` lines → the new image's config.
fn import_config(changes: &[String]) -> Result<ImportConfig> {
    let mut cfg = ImportConfig {
        cmd: Vec::new(),
        entrypoint: Vec::new(),
        env: Vec::new(),
        workdir: None,
        user: None,
    };
    let words = |v: &str| -> Result<Vec<String>> {
        if v.trim_start().starts_with('[') {
            serde_json::from_str(v).with_context(|| format!("Invalid JSON array {v:?}"))
        } else {
            Ok(vec!["/bin/sh".into(), "-c".into(), v.to_string()])
        }
    };
    for c in changes {
        let (k, v) = c
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow!("Invalid --change {c:?}"))?;
        let v = v.trim();
        match k.to_ascii_uppercase().as_str() {
            "CMD" => cfg.cmd = words(v)?,
            "ENTRYPOINT" => cfg.entrypoint = words(v)?,
            "ENV" => cfg.env.push(if v.contains('=') {
                v.to_string()
            } else {
                v.replacen(' ', "=", 1)
            }),
            "WORKDIR" => cfg.workdir = Some(v.to_string()),
            "USER" => cfg.user = Some(v.to_string()),
            other => {
                return Err(anyhow!(
                    "Unsupported --change instruction {other:?}: use CMD, ENTRYPOINT, ENV, WORKDIR or USER"
                ))
            }
        }
    }
    Ok(cfg)
}

pub fn import(g: &Global, source: &Path, name: &str, changes: &[String]) -> Result<()> {
    let cfg = import_config(changes)?;
    let image = open_store(g)?.import_rootfs(source, name, cfg)?;
    let (text, v) = image_out(&image);
    emit(g, text, v);
    Ok(())
}

fn options(r: &RegistryArgs) -> RegistryOptions {
    RegistryOptions {
        insecure: r.insecure,
        ca_file: r.ca_file.clone(),
        username: r.username.clone(),
        password: r.password.clone(),
        platform: ("linux".into(), "amd64".into()),
        parallel: 4,
    }
}

pub fn pull(g: &Global, reference: &str, registry: &RegistryArgs) -> Result<()> {
    let store = open_store(g)?;
    let r = Reference::parse(reference)?;
    let image = registry::pull(&store, &r, &options(registry), progress(g).as_ref())?;
    let (text, v) = image_out(&image);
    emit(g, text, v);
    Ok(())
}

pub fn push(g: &Global, image: &str, destination: Option<&str>, registry: &RegistryArgs) -> Result<()> {
    let store = open_store(g)?;
    let local = store.find(image)?;
    let remote = Reference::parse(destination.unwrap_or(&local.name))?;
    registry::push(&store, image, &remote, &options(registry), progress(g).as_ref())?;
    emit(
        g,
        format!("Pushed {remote}"),
        json!({ "pushed": image, "to": remote.to_string() }),
    );
    Ok(())
}

/// Bars (or plain lines) for people; nothing that would break the JSON on stdout.
fn progress(g: &Global) -> Box<dyn registry::Progress> {
    if g.json() {
        Box::new(registry::NoProgress)
    } else {
        Box::new(registry::TerminalProgress::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("localhost:5000/a/b:t"),
            ("localhost:5000/a/b".into(), "t".into())
        );
        assert_eq!(
            split_name("vessel/busybox"),
            ("vessel/busybox".into(), "<none>".into())
        );
    }

    #[test]
    fn changes_become_config() {
        let c = import_config(&["CMD [\"sh\"]".into(), "ENV A=1".into(), "WORKDIR /w".into()]).unwrap();
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.workdir.as_deref(), Some("/w"));
        assert!(import_config(&["RUN x".into()]).is_err());
    }
}
