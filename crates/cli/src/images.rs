//! The image commands. Those that name images (pull, push, images, inspect, tag, rmi, prune) go through
//! vesseld's API, pull and push as operations with progress; those that move files between this host and
//! the store (save, load, import, unpack) open the store at `--root` on this host.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use hyper::Method;
use vessel_api::{
    Image, ImageDetail, Operation, PruneResult, PullRequest, PushRequest, RegistryAuth, TagRequest,
};
use vessel_image::store::{ImageRecord, ImportConfig, Store};

use crate::cli::{Global, RegistryArgs};
use crate::client::{encode, Client};
use crate::output::{age, emit, human_size, table};
use serde_json::json;

use crate::client::NO_BODY;

fn image_path(name: &str, rest: &str) -> String {
    format!("/1.0/images/{}{rest}", encode(name))
}

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

fn short_id(image: &Image) -> String {
    image.id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub fn list(g: &Global, c: &Client) -> Result<()> {
    let images: Vec<Image> = c.call(Method::GET, "/1.0/images", NO_BODY)?;
    match g.format.as_str() {
        "json" => {
            let v: Vec<serde_json::Value> = images
                .iter()
                .map(|i| {
                    let (repo, tag) = split_name(&i.name);
                    serde_json::json!({
                        "name": i.name, "repository": repo, "tag": tag, "id": i.id,
                        "manifest": i.digest, "created": i.created, "size": i.size, "used_by": i.used_by,
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

pub fn inspect(c: &Client, names: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for n in names {
        let d: ImageDetail = c.call(Method::GET, &image_path(n, ""), NO_BODY)?;
        out.push(serde_json::json!({
            "Name": d.image.name, "Id": d.image.id, "Digest": d.image.digest, "Created": d.image.created,
            "Size": d.image.size, "UsedBy": d.image.used_by, "Manifest": d.manifest, "Config": d.config,
        }));
    }
    crate::output::out(serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn remove(g: &Global, c: &Client, force: bool, names: &[String]) -> Result<()> {
    let q = if force { "?force=true" } else { "" };
    for n in names {
        let _: serde_json::Value = c.call(Method::DELETE, &image_path(n, q), NO_BODY)?;
    }
    let text: Vec<String> = names.iter().map(|n| format!("Untagged: {n}")).collect();
    emit(g, text.join("\n"), json!({ "untagged": names }));
    Ok(())
}

pub fn prune(g: &Global, c: &Client) -> Result<()> {
    let r: PruneResult = c.call(Method::POST, "/1.0/images/prune", NO_BODY)?;
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

pub fn tag(g: &Global, c: &Client, image: &str, name: &str) -> Result<()> {
    let _: Image = c.call(
        Method::POST,
        &image_path(image, "/tag"),
        Some(&TagRequest { name: name.into() }),
    )?;
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

/// Progress is a pull's or push's output, except in JSON.
fn show(g: &Global) -> crate::operations::Show {
    if g.json() {
        crate::operations::Show::Quiet
    } else {
        crate::operations::Show::Stdout
    }
}

fn auth(r: &RegistryArgs) -> RegistryAuth {
    RegistryAuth {
        insecure: r.insecure,
        ca_file: r.ca_file.as_ref().map(|p| p.display().to_string()),
        username: r.username.clone(),
        password: r.password.clone(),
        platform: None,
    }
}

pub fn pull(g: &Global, c: &Client, reference: &str, registry: &RegistryArgs) -> Result<()> {
    let req = PullRequest {
        reference: reference.into(),
        registry: auth(registry),
    };
    let op: Operation = c.call(Method::POST, "/1.0/images/pull", Some(&req))?;
    let done = crate::operations::wait(c, op, show(g))?;
    let image: Image = serde_json::from_value(done.result.unwrap_or_default())
        .context("vesseld's pull ended without the image")?;
    emit(
        g,
        &image.id,
        json!({ "name": image.name, "id": image.id, "digest": image.digest }),
    );
    Ok(())
}

pub fn push(
    g: &Global,
    c: &Client,
    image: &str,
    destination: Option<&str>,
    registry: &RegistryArgs,
) -> Result<()> {
    let req = PushRequest {
        destination: destination.map(str::to_string),
        registry: auth(registry),
    };
    let op: Operation = c.call(Method::POST, &image_path(image, "/push"), Some(&req))?;
    let done = crate::operations::wait(c, op, show(g))?;
    let to = done
        .result
        .as_ref()
        .and_then(|r| r["pushed"].as_str())
        .unwrap_or("")
        .to_string();
    emit(g, format!("Pushed {to}"), json!({ "pushed": image, "to": to }));
    Ok(())
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
