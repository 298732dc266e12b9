"""Report templates and reference tables shipped with grefel (installed as ``grefel.report_assets``)."""
