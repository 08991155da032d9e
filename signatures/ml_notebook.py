"""The nine-dimension rubric for ML notebooks written by code-generation agents.

The rubric text lives in ``ml_notebook.toml``; the classes below are built from it by the same
code path as any user rubric, so the TOML file is the single source of the instructions.
"""

from __future__ import annotations

from judgealign.signatures.rubric import build_signature, load_builtin

RUBRIC = load_builtin("ml_notebook")

LibraryInstallation = build_signature(RUBRIC, "library_installation")
ExploratoryDataAnalysis = build_signature(RUBRIC, "exploratory_data_analysis")
DataImputation = build_signature(RUBRIC, "data_imputation")
FeatureEngineering = build_signature(RUBRIC, "feature_engineering")
ModelTraining = build_signature(RUBRIC, "model_training")
ModelUse = build_signature(RUBRIC, "model_use")
MetricsEvaluation = build_signature(RUBRIC, "metrics_evaluation")
MlflowLogging = build_signature(RUBRIC, "mlflow_logging")
CellOrganization = build_signature(RUBRIC, "cell_organization")

