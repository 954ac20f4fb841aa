//! `sluice plugin inspect`: what a component imports and exports, and which contract
//! version it was built against.

use super::LoadError;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A component's interface, as names.
#[derive(Debug)]
pub struct Interface {
    pub contract: Option<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub fn inspect(engine: &Engine, path: &std::path::Path) -> Result<Interface, LoadError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        name: name.clone(),
        path: path.to_owned(),
        source,
    })?;
    let component = Component::from_binary(engine, &bytes).map_err(|e| LoadError::Compile {
        name,
        path: path.to_owned(),
        message: format!("{e:#}"),
    })?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    let contract = imports
        .iter()
        .find_map(|i| {
            i.strip_prefix("sluice:plugin/types@")
                .or_else(|| i.strip_prefix("sluice:plugin/host@"))
        })
        .map(str::to_owned);
    Ok(Interface {
        contract,
        imports,
        exports,
    })
}
