"""`feast-bc status` as text: one block per family, a line per version, every problem, OK or NOT OK
(the report itself: :mod:`feast_bc.status`)."""

from __future__ import annotations


def render_status(report) -> str:
    """The text of a :class:`~feast_bc.status.RepoStatus`."""
    lines = [f"repo {report.repo}", f"catalog {report.catalog}", f"checked: {report.checks}"]
    lines += [f"PROBLEM: {p}" for p in report.problems]
    lines += [f"note: {n}" for n in report.notes]
    if not report.families:
        lines.append("no embedding families published yet (publish one with the training module or Catalog.publish)")
    for fam in report.families:
        lines.append("")
        lines.append(
            f"family {fam.family}  entity {fam.entity} ({fam.join_key})  latest v{fam.latest}  rows {fam.rows}  "
            f"registry latest {'-' if fam.registry_latest is None else 'v' + str(fam.registry_latest)}"
        )
        if fam.pushes:
            lines.append(
                f"  pushed since v{fam.latest} was published: {fam.pushed_entities} entities in {fam.pushes} pushes "
                f"(last {fam.last_push:%Y-%m-%d %H:%M:%S} UTC)"
            )
        if fam.versions:
            lines.append(
                f"  {'ver':>3} {'dim':>5} {'role':8} {'created (UTC)':20} {'B sha256':14} {'materialized up to':26} metrics"
            )
        for v in fam.versions:
            upto = max((end for _, end in v.materialized_intervals), default=None)
            if v.registered is None:
                mat = "-"
            elif not v.registered:
                mat = "not registered"
            elif v.role == "on_read":
                mat = "computed on read"
            else:
                mat = upto.strftime("%Y-%m-%d %H:%M:%S") if upto else "never"
            metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items()))
            lines.append(
                f"  {v.version:>3} {v.dim:>5} {v.role:8} {v.created_at.strftime('%Y-%m-%d %H:%M:%S'):20} "
                f"{(v.transform_sha256 or '-')[:12]:14} {mat:26} {metrics}"
            )
            if v.gate is not None:
                lines.append(f"      publish gate {v.gate.summary()}")
            if v.drift is not None and v.role != "latest":
                lines.append(f"      {v.drift.describe()}")
        for orphan in fam.orphans:
            lines.append(f"  orphan artifact (not in the manifest): {orphan}")
        lines += [f"  PROBLEM: {p}" for p in fam.problems]
    lines.append("")
    lines.append("OK" if report.ok else "NOT OK")
    return "\n".join(lines)
