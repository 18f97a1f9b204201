//! `capstan render` and `capstan validate`: the manifests rendered offline.

use super::*;

pub(super) async fn render(
    input: &InputArgs,
    format: RenderFormat,
    color: crate::cli::ColorChoice,
) -> anyhow::Result<u8> {
    let (rendered, provider) = render_offline(input, &read_input(input)?, true)?;
    print_warnings(&rendered.warnings, color);
    let merged = rendered.redactor.value(&provider.merge_documents(&rendered.documents));
    let text = match format {
        RenderFormat::Json => serde_json::to_string_pretty(&merged)? + "\n",
        RenderFormat::Yaml => serde_yaml::to_string(&merged)?,
    };
    out(&text)?;
    Ok(EXIT_OK)
}

pub(super) async fn validate(input: &InputArgs, color: crate::cli::ColorChoice) -> anyhow::Result<u8> {
    let read = read_input(input)?;
    let (rendered, provider) = render_offline(input, &read, false)?;
    // References to what is not declared here (a system service, a package) can only be
    // checked against a target: plan and apply do, each with the first place it is written.
    let mut external: std::collections::BTreeMap<String, &crate::model::Reference> = Default::default();
    for x in rendered.desired.resources.values().flat_map(|r| &r.references) {
        if !rendered.desired.resources.contains_key(&x.target) {
            external.entry(x.target.to_string()).or_insert(x);
        }
    }
    // With pruning configured, a reference to an undeclared resource of a kind capstan manages
    // is one plan refuses if this owner made it (it would be deleted while referenced).
    let mut warnings = rendered.warnings.clone();
    if read.config.prune {
        for (name, x) in &external {
            if provider.kind_info(&x.target.kind).managed {
                warnings.push(crate::base::diagnostic::Diagnostic::warning(
                    Some(x.at.clone()),
                    format!(
                        "{name} is not declared here and capstan.yaml prunes: if owner {:?} made it, plan refuses to delete it while this points at it",
                        read.config.owner()
                    ),
                ));
            }
        }
    }
    print_warnings(&warnings, color);
    outln(&format!(
        "{} valid: {} resources in {} documents.",
        input.dir.display(),
        rendered.desired.resources.len(),
        rendered.document_count
    ))?;
    if !external.is_empty() {
        outln(&format!(
            "{} referenced resources are not declared here; plan checks them on the target:",
            external.len()
        ))?;
        for (name, x) in &external {
            outln(&format!("  {name} ({})", x.at))?;
        }
    }
    Ok(EXIT_OK)
}
