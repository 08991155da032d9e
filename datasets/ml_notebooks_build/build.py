"""Generate the bundled ``ml_notebooks`` data set: notebooks, recipes and reference labels.

Run from the repository root::

    python datasets/ml_notebooks_build/build.py            # (re)write datasets/ml_notebooks/
    python datasets/ml_notebooks_build/build.py --check    # exit 1 if the committed files differ

Every notebook is composed from per-dimension *fragments*. Each fragment has a quality level
(1, 2, 3 or N/A) and several genuinely different implementations per level and task type,
written with the domain's own column names. A *recipe* (one per notebook, fixed seeds) picks
the domain, task, model family, naming style and one fragment variant per dimension; the
reference label of each dimension is the variant's level, and its rationale is written from
the variant with the cell numbers at which that variant's code landed in the notebook.

This script is a generator, not package data. Output is deterministic: same code, same files.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "datasets" / "ml_notebooks"
SEED = 20240611
N_PER_DOMAIN = 4

DIMENSIONS = [
    "library_installation",
    "exploratory_data_analysis",
    "data_imputation",
    "feature_engineering",
    "model_training",
    "model_use",
    "metrics_evaluation",
    "mlflow_logging",
    "cell_organization",
]
NA = "N/A"


# --------------------------------------------------------------------------------------------
# Small helpers for writing code text
# --------------------------------------------------------------------------------------------


def q(name: str) -> str:
    return f'"{name}"'


def qlist(names: list[str], indent: int = 4, width: int = 92) -> str:
    """A Python list literal of strings, wrapped to stay under the line length."""
    one = "[" + ", ".join(q(n) for n in names) + "]"
    if len(one) + indent <= width:
        return one
    lines, cur = [], ""
    for n in names:
        piece = q(n) + ", "
        if len(cur) + len(piece) + indent > width:
            lines.append(cur.rstrip())
            cur = ""
        cur += piece
    lines.append(cur.rstrip().rstrip(","))
    pad = " " * indent
    return "[\n" + "\n".join(pad + ln for ln in lines) + "\n]"


def dedent(text: str) -> str:
    """Remove the template's indentation (that of its first line) from every line indented at
    least that much; lines indented less come from interpolated multi-line values and keep
    their own relative indentation."""
    lines = text.strip("\n").splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    base = len(first) - len(first.lstrip(" "))
    out = []
    for ln in lines:
        lead = len(ln) - len(ln.lstrip(" "))
        out.append(ln[base:] if lead >= base else ln)
    return "\n".join(out).rstrip()


def ind(text: str, n: int = 4) -> str:
    return textwrap.indent(text, " " * n)


@dataclass
class Cell:
    kind: str  # "code" or "markdown"
    src: str
    roles: set[str] = field(default_factory=set)
    imports: list[str] = field(default_factory=list)
    optional: bool = False  # explanatory markdown kept only in markdown-rich layouts


def code(src: str, *roles: str, imports: tuple[str, ...] | list[str] = ()) -> Cell:
    return Cell("code", dedent(src), set(roles), list(imports))


def md(src: str, *roles: str, optional: bool = False) -> Cell:
    return Cell("markdown", dedent(src), set(roles), [], optional)


# Top-level module -> (pip name, pinned version)
PIP = {
    "pandas": ("pandas", "2.2.2"),
    "numpy": ("numpy", "1.26.4"),
    "sklearn": ("scikit-learn", "1.5.1"),
    "matplotlib": ("matplotlib", "3.9.2"),
    "seaborn": ("seaborn", "0.13.2"),
    "xgboost": ("xgboost", "2.1.1"),
    "lightgbm": ("lightgbm", "4.5.0"),
    "statsmodels": ("statsmodels", "0.14.2"),
    "mlflow": ("mlflow", "2.16.0"),
    "joblib": ("joblib", "1.4.2"),
    "imblearn": ("imbalanced-learn", "0.12.3"),
    "pyarrow": ("pyarrow", "17.0.0"),
}
STANDARD = {"pandas", "numpy", "sklearn", "matplotlib", "joblib"}
NON_STANDARD = {"xgboost", "lightgbm", "statsmodels", "mlflow", "seaborn", "imblearn"}


def import_module(stmt: str) -> str:
    return stmt.split()[1].split(".")[0]


def render_imports(stmts: list[str]) -> str:
    """Group ``from x import a`` lines by module, plain imports first, stable order."""
    plain, froms = [], {}
    for s in stmts:
        if s.startswith("import "):
            if s not in plain:
                plain.append(s)
        else:
            mod, names = s[5:].split(" import ")
            froms.setdefault(mod, [])
            for n in names.split(", "):
                if n not in froms[mod]:
                    froms[mod].append(n)
    order = ["pandas", "numpy", "matplotlib", "seaborn", "joblib"]

    def key(s: str) -> tuple[int, str]:
        m = import_module(s)
        return (order.index(m) if m in order else len(order), s)

    lines = sorted(plain, key=key)
    for mod in sorted(froms):
        names = ", ".join(sorted(froms[mod]))
        line = f"from {mod} import {names}"
        if len(line) > 99:
            line = f"from {mod} import (\n    " + ",\n    ".join(sorted(froms[mod])) + ",\n)"
        lines.append(line)
    return "\n".join(lines)


def used_names(stmts: list[str]) -> list[str]:
    """The names an import statement binds (``pd``, ``SimpleImputer`` ...)."""
    names = []
    for s in stmts:
        if s.startswith("import "):
            names.append(s.split(" as ")[-1].split()[-1])
        else:
            names.extend(s.split(" import ")[1].split(", "))
    return names


# --------------------------------------------------------------------------------------------
# Domains: tables, columns, the prompts users gave, and domain knowledge used by fragments
# --------------------------------------------------------------------------------------------


@dataclass
class Domain:
    key: str
    task: str  # classification | regression | forecasting
    title: str
    prompts: list[str]
    load: list[str]  # two loading styles; "{df}" is the frame's name
    target: str
    target_desc: str
    num: list[str] = field(default_factory=list)
    cat: list[str] = field(default_factory=list)
    date: str | None = None
    id: str | None = None
    miss_num: list[str] = field(default_factory=list)
    miss_cat: list[str] = field(default_factory=list)
    miss_why: str = ""
    group_imp: tuple[str, str] | None = None
    leak: tuple[str, str, str | None] | None = None  # column, why it leaks, line creating it
    hicard: str | None = None
    fe3: list[str] = field(default_factory=list)  # lines on frame "{f}"
    fe3_num: list[str] = field(default_factory=list)
    fe3_cat: list[str] = field(default_factory=list)
    fe3_md: str = ""
    fe2: list[str] = field(default_factory=list)
    fe2_num: list[str] = field(default_factory=list)
    new_load: str = ""  # "{new}" is the new frame's name
    new_desc: str = ""
    out_file: str = ""
    pos_rate: float = 0.0
    zeros: bool = False
    group_col: str | None = None
    time_split: bool = False
    unit: str = ""
    files: list[str] = field(default_factory=list)
    # forecasting
    series: str | None = None
    freq: str = ""
    freq_word: str = ""
    horizon: int = 0
    season: int = 0
    lags: list[int] = field(default_factory=list)
    exog: list[str] = field(default_factory=list)
    future_load: str = ""  # "{fut}" frame of future exogenous values
    agg_prompts: list[str] = field(default_factory=list)

    @property
    def has_missing(self) -> bool:
        return bool(self.miss_num or self.miss_cat)

    @property
    def imbalanced(self) -> bool:
        return self.task == "classification" and self.pos_rate <= 0.05


DOMAINS: list[Domain] = [
    Domain(
        key="flights", task="classification", title="Flight delays",
        files=["flights.csv", "weather.csv"],
        prompts=[
            "Predict which flights will be delayed tomorrow from tables flights.csv and "
            "weather.csv",
            "Using flights.csv and the hourly airport weather in weather.csv, build a model that "
            "flags departures likely to arrive 15+ minutes late, and score tomorrow's schedule.",
            "We want a delay-risk score for every flight on tomorrow's schedule. Historical "
            "flights are in flights.csv, airport weather in weather.csv.",
            "Train a classifier on flights.csv + weather.csv to predict arrival delays of 15 "
            "minutes or more and produce probabilities for flights_tomorrow.csv.",
        ],
        load=[
            """
            flights = pd.read_csv("flights.csv", parse_dates=["sched_dep"])
            weather = pd.read_csv("weather.csv", parse_dates=["obs_hour"])
            flights["obs_hour"] = flights["sched_dep"].dt.floor("h")
            {df} = flights.merge(weather, left_on=["origin", "obs_hour"],
                                 right_on=["airport", "obs_hour"], how="left")
            {df}["delayed"] = ({df}["arr_delay_min"] >= 15).astype(int)
            """,
            """
            flights = pd.read_csv("flights.csv")
            flights["sched_dep"] = pd.to_datetime(flights["sched_dep"])
            weather = pd.read_csv("weather.csv", parse_dates=["obs_hour"]).rename(
                columns={"airport": "origin"})
            flights["obs_hour"] = flights["sched_dep"].dt.floor("h")
            {df} = pd.merge(flights, weather, on=["origin", "obs_hour"], how="left")
            {df}["delayed"] = {df}["arr_delay_min"].ge(15).astype(int)
            print({df}.shape)
            """,
        ],
        target="delayed", target_desc="arrival delay of 15 minutes or more",
        id="flight_id", date="sched_dep",
        num=["distance_km", "temp_c", "wind_speed_kmh", "visibility_km", "precip_mm"],
        cat=["carrier", "origin", "dest"],
        miss_num=["temp_c", "wind_speed_kmh", "visibility_km", "precip_mm"],
        miss_why="weather readings missing for some airport-hours after the left join",
        group_imp=("wind_speed_kmh", "origin"),
        leak=("dep_delay_min", "the departure delay is only known on the day of travel, after "
              "the prediction for tomorrow has to be made", None),
        hicard="dest",
        fe3=[
            '{f}["dep_hour"] = {f}["sched_dep"].dt.hour',
            '{f}["dep_dow"] = {f}["sched_dep"].dt.dayofweek',
            '{f}["month"] = {f}["sched_dep"].dt.month',
            '{f}["route"] = {f}["origin"] + "-" + {f}["dest"]',
            '{f}["low_visibility"] = ({f}["visibility_km"] < 3).astype(int)',
            '# scheduled departures from the same airport in the same hour (known in advance)',
            '{f}["origin_hour_load"] = {f}.groupby(["origin", "obs_hour"])["flight_id"]'
            '.transform("count")',
        ],
        fe3_num=["dep_hour", "dep_dow", "month", "low_visibility", "origin_hour_load"],
        fe3_cat=["route"],
        fe3_md="Delays build up during the day and at congested hubs, so the hour of departure "
               "and the number of departures scheduled in the same hour matter more than the "
               "raw timestamp.",
        fe2=['{f}["dep_hour"] = {f}["sched_dep"].dt.hour',
             '{f}["dep_dow"] = {f}["sched_dep"].dt.dayofweek'],
        fe2_num=["dep_hour", "dep_dow"],
        new_load="""
            {new} = pd.read_csv("flights_tomorrow.csv", parse_dates=["sched_dep"])
            forecast = pd.read_csv("weather_forecast.csv", parse_dates=["obs_hour"])
            {new}["obs_hour"] = {new}["sched_dep"].dt.floor("h")
            {new} = {new}.merge(forecast, left_on=["origin", "obs_hour"],
                                right_on=["airport", "obs_hour"], how="left")
            """,
        new_desc="tomorrow's schedule (flights_tomorrow.csv joined with weather_forecast.csv)",
        out_file="delay_risk_tomorrow.csv", pos_rate=0.21, time_split=True,
    ),
    Domain(
        key="churn", task="classification", title="Customer churn",
        files=["customers.csv", "usage.csv"],
        prompts=[
            "Predict which customers will churn next month using customers.csv and usage.csv.",
            "Build a churn model for our telecom subscribers (customers.csv, monthly usage in "
            "usage.csv) and give the retention team a ranked list of active customers.",
            "Which active customers are most likely to cancel? Train on customers.csv and "
            "usage.csv and score the current customer base.",
            "Create a churn propensity model from the customer and usage tables and score "
            "active_customers.csv.",
        ],
        load=[
            """
            customers = pd.read_csv("customers.csv", parse_dates=["signup_date"])
            usage = pd.read_csv("usage.csv", parse_dates=["month"])
            recent = usage[usage["month"] > usage["month"].max() - pd.DateOffset(months=3)]
            usage_agg = recent.groupby("customer_id").agg(
                avg_data_gb=("data_gb", "mean"),
                support_calls_3m=("support_calls", "sum"),
                dropped_calls_3m=("dropped_calls", "sum"),
            ).reset_index()
            {df} = customers.merge(usage_agg, on="customer_id", how="left")
            """,
            """
            customers = pd.read_csv("customers.csv", parse_dates=["signup_date"])
            usage = pd.read_csv("usage.csv", parse_dates=["month"])
            last_3m = usage["month"] > usage["month"].max() - pd.DateOffset(months=3)
            usage_agg = (usage[last_3m]
                         .groupby("customer_id")[["data_gb", "support_calls", "dropped_calls"]]
                         .agg({"data_gb": "mean", "support_calls": "sum", "dropped_calls": "sum"})
                         .rename(columns={"data_gb": "avg_data_gb",
                                          "support_calls": "support_calls_3m",
                                          "dropped_calls": "dropped_calls_3m"})
                         .reset_index())
            {df} = customers.merge(usage_agg, on="customer_id", how="left")
            print(len({df}), "customers")
            """,
        ],
        target="churned", target_desc="cancelled within the following month",
        id="customer_id", date="signup_date",
        num=["tenure_months", "monthly_charges", "total_charges", "avg_data_gb",
             "support_calls_3m", "dropped_calls_3m"],
        cat=["plan", "contract_type", "payment_method", "city"],
        miss_num=["total_charges", "avg_data_gb", "support_calls_3m", "dropped_calls_3m"],
        miss_why="total_charges is blank for first-month customers and customers without usage "
                 "rows have no usage aggregates",
        group_imp=("total_charges", "contract_type"),
        leak=("retention_call_made", "the retention team only calls customers after they ask "
              "to cancel, so the flag is recorded after the outcome", None),
        hicard="city",
        fe3=[
            '{f}["charges_per_month"] = {f}["total_charges"] / {f}["tenure_months"].clip(lower=1)',
            '{f}["charge_increase"] = {f}["monthly_charges"] - {f}["charges_per_month"]',
            '{f}["new_customer"] = ({f}["tenure_months"] < 6).astype(int)',
            '{f}["support_heavy"] = ({f}["support_calls_3m"] >= 3).astype(int)',
            '{f}["auto_pay"] = {f}["payment_method"].str.contains("auto").astype(int)',
        ],
        fe3_num=["charges_per_month", "charge_increase", "new_customer", "support_heavy",
                 "auto_pay"],
        fe3_md="Churn usually follows a price increase or repeated support contacts, so we "
               "compare the current bill with the historical average and flag heavy support "
               "use.",
        fe2=['{f}["signup_year"] = {f}["signup_date"].dt.year'],
        fe2_num=["signup_year"],
        new_load="""
            {new} = pd.read_csv("active_customers.csv", parse_dates=["signup_date"])
            {new} = {new}.merge(usage_agg, on="customer_id", how="left")
            """,
        new_desc="the active customer base (active_customers.csv with the latest usage)",
        out_file="churn_scores.csv", pos_rate=0.26,
    ),
    Domain(
        key="credit", task="classification", title="Credit default",
        files=["applications.csv", "bureau.csv"],
        prompts=[
            "Build a model that predicts whether a loan applicant will default within 12 "
            "months (applications.csv, bureau.csv) and score the pending applications.",
            "Credit risk: estimate the probability of default for new applications using our "
            "history in applications.csv and the bureau data in bureau.csv.",
            "Train a default-prediction model on applications.csv joined with bureau.csv; we "
            "need a probability per pending application.",
            "Predict 12-month default for loan applications from applications.csv and "
            "bureau.csv.",
        ],
        load=[
            """
            apps = pd.read_csv("applications.csv", parse_dates=["applied_at"])
            bureau = pd.read_csv("bureau.csv")
            {df} = apps.merge(bureau, on="application_id", how="left")
            """,
            """
            applications = pd.read_csv("applications.csv")
            applications["applied_at"] = pd.to_datetime(applications["applied_at"])
            bureau = pd.read_csv("bureau.csv").drop_duplicates("application_id", keep="last")
            {df} = applications.merge(bureau, on="application_id", how="left",
                                      validate="one_to_one")
            """,
        ],
        target="default_12m", target_desc="default within 12 months of the loan start",
        id="application_id", date="applied_at",
        num=["loan_amount", "term_months", "annual_income", "debt_to_income",
             "employment_years", "credit_history_months", "open_accounts",
             "delinquencies_2y", "bureau_score", "inquiries_6m"],
        cat=["home_ownership", "purpose", "zip3"],
        miss_num=["annual_income", "employment_years", "bureau_score", "inquiries_6m"],
        miss_why="income and employment are self-reported and often blank, and applicants "
                 "without a bureau file have no bureau_score",
        group_imp=("annual_income", "home_ownership"),
        leak=("recoveries", "recoveries are amounts collected after a loan is charged off, so "
              "they are non-zero almost only for defaulted loans", None),
        hicard="zip3",
        fe3=[
            '{f}["loan_to_income"] = {f}["loan_amount"] / {f}["annual_income"]',
            '{f}["installment"] = {f}["loan_amount"] / {f}["term_months"]',
            '{f}["credit_history_years"] = {f}["credit_history_months"] / 12',
            '{f}["any_delinquency"] = ({f}["delinquencies_2y"] > 0).astype(int)',
            '{f}["no_bureau_file"] = {f}["bureau_score"].isna().astype(int)',
        ],
        fe3_num=["loan_to_income", "installment", "credit_history_years", "any_delinquency",
                 "no_bureau_file"],
        fe3_md="Affordability (loan relative to income, monthly installment) and a thin credit "
               "file are the classic default drivers; all of them are known at application "
               "time.",
        fe2=['{f}["applied_month"] = {f}["applied_at"].dt.month'],
        fe2_num=["applied_month"],
        new_load="""
            {new} = pd.read_csv("pending_applications.csv", parse_dates=["applied_at"])
            {new} = {new}.merge(pd.read_csv("bureau_latest.csv"), on="application_id",
                                how="left")
            """,
        new_desc="the pending applications (pending_applications.csv with bureau_latest.csv)",
        out_file="pending_default_pd.csv", pos_rate=0.08,
    ),
    Domain(
        key="readmission", task="classification", title="Hospital readmission",
        files=["admissions.csv", "labs.csv"],
        prompts=[
            "Predict 30-day hospital readmission from admissions.csv and labs.csv so that case "
            "managers can prioritise follow-up calls for today's discharges.",
            "Build a readmission risk model (30 days) from our admissions and lab tables.",
            "Using admissions.csv and labs.csv, train a model for 30-day readmission and score "
            "the patients discharged today.",
            "Which discharged patients are likely to be readmitted within 30 days? Data: "
            "admissions.csv, labs.csv.",
        ],
        load=[
            """
            admissions = pd.read_csv("admissions.csv", parse_dates=["admit_date"])
            labs = pd.read_csv("labs.csv")
            {df} = admissions.merge(labs, on="encounter_id", how="left")
            """,
            """
            admissions = pd.read_csv("admissions.csv", parse_dates=["admit_date", "discharge_date"])
            labs = (pd.read_csv("labs.csv")
                      .groupby("encounter_id", as_index=False)
                      .agg(a1c_value=("a1c_value", "last"), bmi=("bmi", "last")))
            {df} = admissions.merge(labs, on="encounter_id", how="left")
            print({df}.shape, {df}["patient_id"].nunique(), "patients")
            """,
        ],
        target="readmitted_30d", target_desc="readmission within 30 days of discharge",
        id="encounter_id", date="admit_date",
        num=["age", "time_in_hospital", "num_lab_procedures", "num_medications",
             "num_diagnoses", "prior_inpatient", "prior_emergency", "a1c_value", "bmi"],
        cat=["gender", "admission_type", "discharge_disposition", "payer_code", "primary_diag"],
        miss_num=["a1c_value", "bmi"],
        miss_cat=["payer_code"],
        miss_why="A1c is only measured for some patients, so its absence is informative, "
                 "and payer_code is often blank",
        group_imp=("bmi", "gender"),
        leak=("days_to_next_admission", "it is computed from the next admission, i.e. from "
              "the outcome itself", None),
        hicard="primary_diag",
        fe3=[
            '{f}["prior_visits"] = {f}["prior_inpatient"] + {f}["prior_emergency"]',
            '{f}["meds_per_day"] = {f}["num_medications"] / {f}["time_in_hospital"].clip(lower=1)',
            '{f}["a1c_measured"] = {f}["a1c_value"].notna().astype(int)',
            '{f}["a1c_high"] = ({f}["a1c_value"] > 8).astype(int)',
            '{f}["diag_group"] = {f}["primary_diag"].astype(str).str[:3]',
        ],
        fe3_num=["prior_visits", "meds_per_day", "a1c_measured", "a1c_high"],
        fe3_cat=["diag_group"],
        fe3_md="Prior utilisation is the strongest readmission signal; whether A1c was "
               "measured at all says something about the care pathway, so we keep it as a "
               "flag.",
        fe2=['{f}["admit_month"] = {f}["admit_date"].dt.month'],
        fe2_num=["admit_month"],
        new_load="""
            {new} = pd.read_csv("discharges_today.csv", parse_dates=["admit_date"])
            {new} = {new}.merge(pd.read_csv("labs_today.csv"), on="encounter_id", how="left")
            """,
        new_desc="today's discharges (discharges_today.csv with labs_today.csv)",
        out_file="readmission_risk_today.csv", pos_rate=0.11, group_col="patient_id",
    ),
    Domain(
        key="fraud", task="classification", title="Card fraud",
        files=["transactions.csv"],
        prompts=[
            "Detect fraudulent card transactions in transactions.csv (about 1% are fraud) and "
            "score today's transactions.",
            "Build a fraud detection model for card payments; labelled history is in "
            "transactions.csv. Fraud is rare (~1%).",
            "Train a model on transactions.csv to flag likely fraud and produce alerts for "
            "transactions_today.csv.",
            "We need a fraud score for every new card transaction. History with the is_fraud "
            "label: transactions.csv.",
        ],
        load=[
            """
            {df} = pd.read_csv("transactions.csv", parse_dates=["txn_time"])
            {df} = {df}.sort_values("txn_time").reset_index(drop=True)
            """,
            """
            {df} = pd.read_csv("transactions.csv")
            {df}["txn_time"] = pd.to_datetime({df}["txn_time"], utc=True)
            {df} = {df}.sort_values(["card_id", "txn_time"]).reset_index(drop=True)
            print({df}["is_fraud"].mean())
            """,
        ],
        target="is_fraud", target_desc="transaction confirmed as fraud",
        id="txn_id", date="txn_time",
        num=["amount", "distance_from_home_km", "account_age_days", "card_present",
             "txn_count_24h"],
        cat=["merchant_category", "channel", "country", "merchant_id"],
        miss_num=["distance_from_home_km"],
        miss_why="distance_from_home_km is missing for online transactions without a "
                 "geolocated IP",
        group_imp=("distance_from_home_km", "channel"),
        leak=("chargeback_filed", "chargebacks are filed by the card holder days or weeks "
              "after the transaction", None),
        hicard="merchant_id",
        fe3=[
            '{f}["hour"] = {f}["txn_time"].dt.hour',
            '{f}["night"] = {f}["hour"].isin([0, 1, 2, 3, 4, 5]).astype(int)',
            '{f}["log_amount"] = np.log1p({f}["amount"])',
            '# average of the card\'s previous amounts only (no look-ahead)',
            '{f}["card_prev_mean"] = {f}.groupby("card_id")["amount"].transform(\n'
            '    lambda s: s.shift().expanding().mean())',
            '{f}["amount_vs_card"] = ({f}["amount"] / {f}["card_prev_mean"]).fillna(1.0)',
        ],
        fe3_num=["hour", "night", "log_amount", "amount_vs_card"],
        fe3_md="Fraud shows up as unusual behaviour for a card, so the amount is compared "
               "with the same card's earlier transactions only (shifted, so the current "
               "transaction never sees itself or the future).",
        fe2=['{f}["hour"] = {f}["txn_time"].dt.hour'],
        fe2_num=["hour"],
        new_load="""
            {new} = pd.read_csv("transactions_today.csv", parse_dates=["txn_time"])
            """,
        new_desc="today's transactions (transactions_today.csv)",
        out_file="fraud_alerts_today.csv", pos_rate=0.01,
    ),
    Domain(
        key="maintenance", task="classification", title="Machine failure",
        files=["sensor_daily.csv", "maintenance.csv"],
        prompts=[
            "Predict which machines will fail in the next 7 days from the daily sensor "
            "readings (sensor_daily.csv) and maintenance log (maintenance.csv).",
            "Predictive maintenance: build a model for failure within 7 days and score "
            "today's sensor snapshot.",
            "Using sensor_daily.csv and maintenance.csv, train a classifier for imminent "
            "machine failure (7-day window).",
            "Flag machines at risk of failing within a week; data in sensor_daily.csv and "
            "maintenance.csv.",
        ],
        load=[
            """
            sensors = pd.read_csv("sensor_daily.csv", parse_dates=["date"])
            service = pd.read_csv("maintenance.csv", parse_dates=["last_service_date"])
            {df} = sensors.merge(service, on="machine_id", how="left")
            """,
            """
            sensors = pd.read_csv("sensor_daily.csv", parse_dates=["date"])
            service = (pd.read_csv("maintenance.csv", parse_dates=["last_service_date"])
                         .sort_values("last_service_date")
                         .drop_duplicates("machine_id", keep="last"))
            {df} = sensors.merge(service, on="machine_id", how="left")
            print({df}["machine_id"].nunique(), "machines,", len({df}), "machine-days")
            """,
        ],
        target="failure_next_7d", target_desc="failure within the next 7 days",
        id="machine_id", date="date",
        num=["temperature_c", "vibration_mm_s", "pressure_bar", "rpm", "operating_hours"],
        cat=["machine_model", "site"],
        miss_num=["vibration_mm_s", "pressure_bar"],
        miss_why="vibration and pressure sensors drop out for hours at a time",
        group_imp=("vibration_mm_s", "machine_model"),
        leak=("repair_ticket_opened", "repair tickets are opened when a failure is reported",
              None),
        fe3=[
            '{f} = {f}.sort_values(["machine_id", "date"])',
            '{f}["days_since_service"] = ({f}["date"] - {f}["last_service_date"]).dt.days',
            '{f}["vibration_7d"] = {f}.groupby("machine_id")["vibration_mm_s"].transform(\n'
            '    lambda s: s.rolling(7, min_periods=1).mean())',
            '{f}["temp_delta_7d"] = {f}["temperature_c"] - {f}.groupby("machine_id")'
            '["temperature_c"].transform(\n    lambda s: s.rolling(7, min_periods=1).mean())',
        ],
        fe3_num=["days_since_service", "vibration_7d", "temp_delta_7d"],
        fe3_md="Failures are preceded by drift, so we add 7-day rolling vibration and the "
               "temperature's deviation from its own recent level (past and current readings "
               "only), plus time since the last service.",
        fe2=['{f}["days_since_service"] = ({f}["date"] - {f}["last_service_date"]).dt.days'],
        fe2_num=["days_since_service"],
        new_load="""
            {new} = pd.read_csv("sensor_today.csv", parse_dates=["date"])
            {new} = {new}.merge(service, on="machine_id", how="left")
            """,
        new_desc="today's sensor snapshot (sensor_today.csv)",
        out_file="failure_risk_today.csv", pos_rate=0.03, group_col="machine_id",
    ),
    Domain(
        key="houses", task="regression", title="House prices",
        files=["houses.csv"],
        prompts=[
            "Predict house sale prices from houses.csv and estimate prices for the new "
            "listings in listings_2024.csv.",
            "Build a regression model for sale_price using the features in houses.csv.",
            "Estimate the market value of the homes in listings_2024.csv with a model trained "
            "on past sales (houses.csv).",
            "Train a price model on houses.csv; we want price estimates for new listings.",
        ],
        load=[
            """
            {df} = pd.read_csv("houses.csv", parse_dates=["sale_date"])
            """,
            """
            {df} = pd.read_csv("houses.csv")
            {df}["sale_date"] = pd.to_datetime({df}["sale_date"])
            {df} = {df}.drop_duplicates("house_id")
            print({df}.shape)
            """,
        ],
        target="sale_price", target_desc="sale price in dollars", unit="dollars",
        id="house_id", date="sale_date",
        num=["living_area_sqft", "lot_area_sqft", "lot_frontage_ft", "year_built",
             "year_remodeled", "bedrooms", "bathrooms", "garage_cars", "overall_quality"],
        cat=["neighborhood", "house_style", "heating"],
        miss_num=["lot_frontage_ft", "garage_cars", "year_remodeled"],
        miss_why="lot_frontage_ft is unrecorded for many lots, and garage_cars / "
                 "year_remodeled are blank when there is no garage or remodel",
        group_imp=("lot_frontage_ft", "neighborhood"),
        leak=("price_per_sqft", "it is sale_price divided by the living area, i.e. the target "
              "itself", '{f}["price_per_sqft"] = {f}["sale_price"] / {f}["living_area_sqft"]'),
        hicard="neighborhood",
        fe3=[
            '{f}["house_age"] = {f}["sale_date"].dt.year - {f}["year_built"]',
            '{f}["remodeled"] = {f}["year_remodeled"].notna().astype(int)',
            '{f}["total_baths"] = {f}["bathrooms"] + 0.5 * ({f}["bedrooms"] > 3)',
            '{f}["area_per_room"] = {f}["living_area_sqft"] / ({f}["bedrooms"] + 1)',
            '{f}["log_lot_area"] = np.log1p({f}["lot_area_sqft"])',
        ],
        fe3_num=["house_age", "remodeled", "total_baths", "area_per_room", "log_lot_area"],
        fe3_md="Buyers pay for age, space per room and (log) lot size rather than raw years "
               "and square feet; a remodel flag keeps the information in the missing "
               "year_remodeled.",
        fe2=['{f}["house_age"] = {f}["sale_date"].dt.year - {f}["year_built"]'],
        fe2_num=["house_age"],
        new_load="""
            {new} = pd.read_csv("listings_2024.csv", parse_dates=["sale_date"])
            """,
        new_desc="the new listings (listings_2024.csv)",
        out_file="listing_price_estimates.csv",
    ),
    Domain(
        key="taxi", task="regression", title="Taxi fares",
        files=["trips.parquet"],
        prompts=[
            "Predict taxi fares from trips.parquet so the app can quote a price before the "
            "ride starts.",
            "Build a fare estimation model (fare_amount) for trip requests using historical "
            "trips in trips.parquet.",
            "Train a regression model on trips.parquet to estimate the fare of requested "
            "trips in trip_requests.parquet.",
            "Fare prediction: use trips.parquet to estimate fare_amount for upcoming ride "
            "requests.",
        ],
        load=[
            """
            {df} = pd.read_parquet("trips.parquet")
            {df} = {df}[({df}["fare_amount"] > 0) & ({df}["fare_amount"] < 500)]
            """,
            """
            {df} = pd.read_parquet("trips.parquet", engine="pyarrow")
            {df}["pickup_datetime"] = pd.to_datetime({df}["pickup_datetime"])
            {df} = {df}.query("0 < fare_amount < 500").reset_index(drop=True)
            print(f"{len({df}):,} trips")
            """,
        ],
        target="fare_amount", target_desc="fare in dollars", unit="dollars",
        id="trip_id", date="pickup_datetime",
        num=["pickup_lat", "pickup_lon", "dropoff_lat", "dropoff_lon", "passenger_count",
             "trip_distance_km"],
        cat=["vendor_id", "pickup_zone", "dropoff_zone"],
        miss_num=["passenger_count", "trip_distance_km"],
        miss_why="the meter does not always report passenger_count, and trip_distance_km is "
                 "the route planner's estimate, missing when routing failed",
        group_imp=("trip_distance_km", "pickup_zone"),
        leak=("total_amount", "total_amount is the fare plus tip, tolls and surcharges, known "
              "only when the ride ends", None),
        hicard="pickup_zone",
        fe3=[
            '{f}["pickup_hour"] = {f}["pickup_datetime"].dt.hour',
            '{f}["pickup_dow"] = {f}["pickup_datetime"].dt.dayofweek',
            '{f}["rush_hour"] = {f}["pickup_hour"].isin([7, 8, 9, 16, 17, 18]).astype(int)',
            'lat1, lon1 = np.radians({f}["pickup_lat"]), np.radians({f}["pickup_lon"])',
            'lat2, lon2 = np.radians({f}["dropoff_lat"]), np.radians({f}["dropoff_lon"])',
            'a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * '
            'np.sin((lon2 - lon1) / 2) ** 2',
            '{f}["haversine_km"] = 6371 * 2 * np.arcsin(np.sqrt(a))',
            '{f}["airport_trip"] = {f}["dropoff_zone"].isin(["JFK Airport", "LaGuardia Airport"])'
            '.astype(int)',
        ],
        fe3_num=["pickup_hour", "pickup_dow", "rush_hour", "haversine_km", "airport_trip"],
        fe3_md="Fares are set by distance, time of day and airport flat rates; the straight-"
               "line distance is a robust fallback when the planner's distance is missing.",
        fe2=['{f}["pickup_hour"] = {f}["pickup_datetime"].dt.hour'],
        fe2_num=["pickup_hour"],
        new_load="""
            {new} = pd.read_parquet("trip_requests.parquet")
            """,
        new_desc="incoming ride requests (trip_requests.parquet)",
        out_file="fare_quotes.csv",
    ),
    Domain(
        key="bikes", task="regression", title="Bike sharing demand",
        files=["bike_hourly.csv"],
        prompts=[
            "Predict hourly bike rentals from bike_hourly.csv and estimate demand for the next "
            "48 hours from the weather forecast.",
            "Build a model for hourly bike-sharing demand (count) using weather and calendar "
            "features in bike_hourly.csv.",
            "Using bike_hourly.csv, train a regressor for rentals per hour and apply it to "
            "weather_forecast_48h.csv.",
            "How many bikes will be rented each hour over the next two days? History: "
            "bike_hourly.csv.",
        ],
        load=[
            """
            {df} = pd.read_csv("bike_hourly.csv", parse_dates=["timestamp"])
            {df} = {df}.sort_values("timestamp").reset_index(drop=True)
            """,
            """
            {df} = pd.read_csv("bike_hourly.csv")
            {df}["timestamp"] = pd.to_datetime({df}["timestamp"])
            {df} = {df}.set_index("timestamp", drop=False).sort_index()
            print({df}.index.min(), "->", {df}.index.max())
            """,
        ],
        target="count", target_desc="rentals in the hour", unit="rentals",
        id="timestamp", date="timestamp",
        num=["temp_c", "feels_like_c", "humidity", "windspeed", "holiday", "workingday"],
        cat=["season", "weather_sit"],
        leak=("registered", "registered and casual rentals add up to count, so they are "
              "parts of the target", None),
        fe3=[
            '{f}["hour"] = {f}["timestamp"].dt.hour',
            '{f}["dow"] = {f}["timestamp"].dt.dayofweek',
            '{f}["month"] = {f}["timestamp"].dt.month',
            '{f}["commute_hour"] = ({f}["hour"].isin([7, 8, 17, 18]) & '
            '({f}["workingday"] == 1)).astype(int)',
            '{f}["hour_sin"] = np.sin(2 * np.pi * {f}["hour"] / 24)',
            '{f}["hour_cos"] = np.cos(2 * np.pi * {f}["hour"] / 24)',
        ],
        fe3_num=["hour", "dow", "month", "commute_hour", "hour_sin", "hour_cos"],
        fe3_md="Demand has two peaks on working days (commutes) and one on weekends, so the "
               "hour interacts with workingday; cyclic encodings keep 23:00 next to 00:00.",
        fe2=['{f}["hour"] = {f}["timestamp"].dt.hour', '{f}["month"] = {f}["timestamp"].dt.month'],
        fe2_num=["hour", "month"],
        new_load="""
            {new} = pd.read_csv("weather_forecast_48h.csv", parse_dates=["timestamp"])
            """,
        new_desc="the next 48 hours (weather_forecast_48h.csv with calendar flags)",
        out_file="rentals_next_48h.csv", time_split=True,
    ),
    Domain(
        key="wine", task="regression", title="Wine quality",
        files=["winequality.csv"],
        prompts=[
            "Predict wine quality scores from the physico-chemical measurements in "
            "winequality.csv and score the new batches.",
            "Build a regression model for the tasting panel's quality score (winequality.csv) "
            "so the lab can pre-screen new batches.",
            "Using winequality.csv, estimate quality for the lab results in new_batches.csv.",
            "Train a model that predicts the quality score of a wine from its lab analysis.",
        ],
        load=[
            """
            {df} = pd.read_csv("winequality.csv")
            """,
            """
            {df} = pd.read_csv("winequality.csv", sep=";")
            {df}.columns = [c.strip().replace(" ", "_") for c in {df}.columns]
            print({df}.dtypes.value_counts())
            """,
        ],
        target="quality", target_desc="tasting panel quality score (3-9)", unit="points",
        id="batch_id",
        num=["fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides",
             "free_sulfur_dioxide", "total_sulfur_dioxide", "density", "pH", "sulphates",
             "alcohol"],
        cat=["color"],
        leak=("quality_grade", "the panel assigns the letter grade from the same tasting that "
              "gives the quality score", None),
        fe3=[
            '{f}["free_so2_ratio"] = {f}["free_sulfur_dioxide"] / {f}["total_sulfur_dioxide"]',
            '{f}["total_acidity"] = {f}["fixed_acidity"] + {f}["volatile_acidity"]',
            '{f}["sugar_alcohol_ratio"] = {f}["residual_sugar"] / {f}["alcohol"]',
            '{f}["log_chlorides"] = np.log({f}["chlorides"])',
        ],
        fe3_num=["free_so2_ratio", "total_acidity", "sugar_alcohol_ratio", "log_chlorides"],
        fe3_md="Winemakers read sulphur dioxide as a free/total ratio and acidity as a total; "
               "chlorides are heavily right-skewed, so we take the log.",
        fe2=['{f}["is_red"] = ({f}["color"] == "red").astype(int)'],
        fe2_num=["is_red"],
        new_load="""
            {new} = pd.read_csv("new_batches.csv")
            """,
        new_desc="the new lab results (new_batches.csv)",
        out_file="batch_quality_estimates.csv",
    ),
    Domain(
        key="insurance", task="regression", title="Insurance claims",
        files=["policies.csv", "claims.csv"],
        prompts=[
            "Predict the yearly claim cost per motor policy from policies.csv and claims.csv "
            "to support renewal pricing.",
            "Build a model of total claim amount per policy-year (policies.csv, claims.csv) "
            "and score the policies up for renewal.",
            "Using our policy and claims tables, estimate expected claim cost for the "
            "renewals in renewals.csv.",
            "Train a regression model for claim cost per policy; most policies have no claim.",
        ],
        load=[
            """
            policies = pd.read_csv("policies.csv", parse_dates=["start_date"])
            claims = pd.read_csv("claims.csv")
            cost = claims.groupby("policy_id", as_index=False)["claim_amount"].sum()
            {df} = policies.merge(cost, on="policy_id", how="left")
            {df}["claim_cost"] = {df}["claim_amount"].fillna(0.0)
            """,
            """
            policies = pd.read_csv("policies.csv", parse_dates=["start_date"])
            claims = pd.read_csv("claims.csv")
            totals = claims.pivot_table(index="policy_id", values="claim_amount", aggfunc="sum")
            {df} = policies.join(totals, on="policy_id")
            # policies without a claim row had no claim in the year
            {df}["claim_cost"] = {df}["claim_amount"].fillna(0.0)
            """,
        ],
        target="claim_cost", target_desc="total claim cost in the policy year", unit="EUR",
        id="policy_id", date="start_date",
        num=["driver_age", "vehicle_age", "vehicle_value", "annual_mileage_km", "bonus_malus",
             "credit_score", "exposure_years"],
        cat=["region", "vehicle_type", "fuel_type", "vehicle_make"],
        miss_num=["credit_score", "annual_mileage_km"],
        miss_why="credit_score is missing where the customer did not consent to a check and "
                 "annual_mileage_km is self-declared",
        group_imp=("annual_mileage_km", "vehicle_type"),
        leak=("claim_count", "the number of claims in the same policy year is part of the "
              "outcome being predicted", None),
        hicard="vehicle_make",
        fe3=[
            '{f}["young_driver"] = ({f}["driver_age"] < 25).astype(int)',
            '{f}["value_per_year"] = {f}["vehicle_value"] / ({f}["vehicle_age"] + 1)',
            '{f}["km_per_year"] = {f}["annual_mileage_km"] / {f}["exposure_years"]'
            '.clip(lower=0.1)',
            '{f}["bonus_malus_high"] = ({f}["bonus_malus"] > 100).astype(int)',
        ],
        fe3_num=["young_driver", "value_per_year", "km_per_year", "bonus_malus_high"],
        fe3_md="Claim cost scales with exposure and mileage, and young drivers and a high "
               "bonus-malus are the classic risk flags used in pricing.",
        fe2=['{f}["start_month"] = {f}["start_date"].dt.month'],
        fe2_num=["start_month"],
        new_load="""
            {new} = pd.read_csv("renewals.csv", parse_dates=["start_date"])
            """,
        new_desc="the policies up for renewal (renewals.csv)",
        out_file="renewal_expected_cost.csv", zeros=True,
    ),
]

DOMAINS += [
    Domain(
        key="retail", task="forecasting", title="Retail sales forecasting",
        files=["sales.csv", "holidays.csv"],
        prompts=[
            "Forecast weekly unit sales per store for the next 4 weeks from sales.csv and "
            "holidays.csv, using the promotion plan for those weeks.",
            "Build a model that forecasts units_sold for every store 4 weeks ahead "
            "(sales.csv, holidays.csv, promo_plan_next_4_weeks.csv).",
            "Store managers need a 4-week unit sales forecast per store. History is in "
            "sales.csv, holidays in holidays.csv; promotions for the coming weeks are planned.",
        ],
        agg_prompts=[
            "Forecast total weekly unit sales across all stores for the next 4 weeks from "
            "sales.csv.",
            "We need a chain-level weekly sales forecast (next 4 weeks) from sales.csv.",
        ],
        load=[
            """
            sales = pd.read_csv("sales.csv", parse_dates=["week_start"])
            holidays = pd.read_csv("holidays.csv", parse_dates=["week_start"])
            {df} = sales.merge(holidays, on="week_start", how="left")
            {df}["holiday_flag"] = {df}["holiday_flag"].fillna(0).astype(int)
            {df} = {df}.sort_values(["store_id", "week_start"]).reset_index(drop=True)
            """,
            """
            sales = pd.read_csv("sales.csv")
            sales["week_start"] = pd.to_datetime(sales["week_start"])
            holidays = pd.read_csv("holidays.csv", parse_dates=["week_start"])
            {df} = (sales.merge(holidays, on="week_start", how="left")
                       .assign(holiday_flag=lambda d: d["holiday_flag"].fillna(0).astype(int))
                       .sort_values(["store_id", "week_start"])
                       .reset_index(drop=True))
            print({df}["store_id"].nunique(), "stores")
            """,
        ],
        target="units_sold", target_desc="units sold in the week", unit="units",
        date="week_start", series="store_id", freq="W-MON", freq_word="week",
        horizon=4, season=52, lags=[4, 8, 52], exog=["promo_flag", "price_index", "holiday_flag"],
        miss_num=["units_sold", "price_index"],
        miss_why="some store-weeks have no sales row or a blank price_index after POS outages",
        future_load="""
            {fut} = pd.read_csv("promo_plan_next_4_weeks.csv", parse_dates=["week_start"])
            {fut} = {fut}.merge(holidays, on="week_start", how="left")
            {fut}["holiday_flag"] = {fut}["holiday_flag"].fillna(0).astype(int)
            """,
        new_desc="the next 4 weeks (promo_plan_next_4_weeks.csv)",
        out_file="store_forecast_next_4_weeks.csv", zeros=True,
    ),
    Domain(
        key="energy", task="forecasting", title="Electricity load forecasting",
        files=["load_hourly.csv", "weather_hourly.csv"],
        prompts=[
            "Forecast tomorrow's hourly electricity load (next 24 hours) from load_hourly.csv "
            "and weather_hourly.csv, using the temperature forecast.",
            "Build a day-ahead load forecasting model (hourly MW) from our load and weather "
            "history.",
            "Predict the next 24 hourly values of load_mw using past load and temperature "
            "(load_hourly.csv, weather_hourly.csv) and tomorrow's temperature forecast.",
        ],
        agg_prompts=[
            "Produce a day-ahead (24 hourly values) forecast of system load from "
            "load_hourly.csv.",
            "Forecast the next 24 hours of load_mw with a statistical model; data in "
            "load_hourly.csv.",
        ],
        load=[
            """
            load = pd.read_csv("load_hourly.csv", parse_dates=["timestamp"])
            temps = pd.read_csv("weather_hourly.csv", parse_dates=["timestamp"])
            {df} = load.merge(temps, on="timestamp", how="left").sort_values("timestamp")
            {df} = {df}.reset_index(drop=True)
            """,
            """
            load = pd.read_csv("load_hourly.csv")
            load["timestamp"] = pd.to_datetime(load["timestamp"], utc=True).dt.tz_localize(None)
            temps = pd.read_csv("weather_hourly.csv", parse_dates=["timestamp"])
            {df} = (load.merge(temps, on="timestamp", how="left")
                       .sort_values("timestamp").reset_index(drop=True))
            print({df}["timestamp"].min(), {df}["timestamp"].max())
            """,
        ],
        target="load_mw", target_desc="system load in MW", unit="MW",
        date="timestamp", series=None, freq="h", freq_word="hour",
        horizon=24, season=24, lags=[24, 48, 168], exog=["temp_c"],
        miss_num=["load_mw", "temp_c"],
        miss_why="meter outages leave gaps in load_mw and the weather feed misses some hours",
        future_load="""
            {fut} = pd.read_csv("weather_forecast_24h.csv", parse_dates=["timestamp"])
            """,
        new_desc="the next 24 hours (weather_forecast_24h.csv)",
        out_file="load_forecast_next_24h.csv",
    ),
    Domain(
        key="webtraffic", task="forecasting", title="Web traffic forecasting",
        files=["page_views.csv", "campaigns.csv"],
        prompts=[
            "Forecast daily page views for each of our top pages for the next 14 days "
            "(page_views.csv, campaigns.csv).",
            "Build a model that predicts views per page and day two weeks ahead, taking the "
            "marketing campaign calendar into account.",
            "Using page_views.csv and campaigns.csv, forecast the next 14 days of views for "
            "every page so the content team can plan.",
        ],
        agg_prompts=[
            "Forecast total daily site views for the next 14 days from page_views.csv.",
            "We need a 14-day forecast of total daily page views; history in page_views.csv.",
        ],
        load=[
            """
            views = pd.read_csv("page_views.csv", parse_dates=["date"])
            campaigns = pd.read_csv("campaigns.csv", parse_dates=["date"])
            {df} = views.merge(campaigns, on="date", how="left")
            {df}["campaign_active"] = {df}["campaign_active"].fillna(0).astype(int)
            {df} = {df}.sort_values(["page", "date"]).reset_index(drop=True)
            """,
            """
            views = pd.read_csv("page_views.csv", parse_dates=["date"])
            campaigns = pd.read_csv("campaigns.csv", parse_dates=["date"]).drop_duplicates("date")
            {df} = (views.merge(campaigns, on="date", how="left")
                        .fillna({"campaign_active": 0})
                        .sort_values(["page", "date"], ignore_index=True))
            print({df}["page"].nunique(), "pages,", {df}["date"].nunique(), "days")
            """,
        ],
        target="views", target_desc="page views per day", unit="views",
        date="date", series="page", freq="D", freq_word="day",
        horizon=14, season=7, lags=[14, 21, 28], exog=["campaign_active"],
        miss_num=["views"],
        miss_why="tracking outages leave some page-days without a views value",
        future_load="""
            calendar = pd.read_csv("campaign_calendar_next_14d.csv", parse_dates=["date"])
            {fut} = pd.DataFrame({"page": {df}["page"].unique()}).merge(calendar, how="cross")
            """,
        new_desc="the next 14 days (campaign_calendar_next_14d.csv)",
        out_file="page_views_forecast_14d.csv", zeros=True,
    ),
    Domain(
        key="callcenter", task="forecasting", title="Call center volume forecasting",
        files=["calls_daily.csv"],
        prompts=[
            "Forecast daily calls offered per queue (billing, tech, sales) for the next 14 days "
            "from calls_daily.csv so we can plan staffing.",
            "Build a 14-day ahead forecast of call volume per queue; calls_daily.csv has the "
            "history with holidays and the billing-run volume.",
            "Predict calls_offered for each queue and day over the next two weeks from "
            "calls_daily.csv; holidays and planned billing runs are known in advance.",
        ],
        agg_prompts=[
            "Forecast total daily call volume for the next two weeks from calls_daily.csv.",
            "Give me a 14-day forecast of total calls offered (all queues) for staffing.",
        ],
        load=[
            """
            {df} = pd.read_csv("calls_daily.csv", parse_dates=["date"])
            {df} = {df}.sort_values(["queue", "date"]).reset_index(drop=True)
            """,
            """
            {df} = pd.read_csv("calls_daily.csv")
            {df}["date"] = pd.to_datetime({df}["date"], format="%Y-%m-%d")
            {df} = {df}.sort_values(["queue", "date"], ignore_index=True)
            print({df}.groupby("queue")["date"].agg(["min", "max", "count"]))
            """,
        ],
        target="calls_offered", target_desc="calls offered per day", unit="calls",
        date="date", series="queue", freq="D", freq_word="day",
        horizon=14, season=7, lags=[14, 21, 28], exog=["is_holiday", "bills_sent_k"],
        miss_num=["calls_offered"],
        miss_why="the telephony export failed on some days, leaving calls_offered blank",
        future_load="""
            {fut} = pd.read_csv("calendar_next_14d.csv", parse_dates=["date"])
            """,
        new_desc="the next 14 days (calendar_next_14d.csv with holidays and planned billing runs)",
        out_file="calls_forecast_14d.csv", zeros=True,
    ),
]
DOMAIN_BY_KEY = {d.key: d for d in DOMAINS}

# Columns recorded after the outcome (never features, except in the leaky variants).
POST_COLS = {
    "flights": ["arr_delay_min", "dep_delay_min"],
    "churn": ["retention_call_made"],
    "credit": ["recoveries"],
    "readmission": ["days_to_next_admission"],
    "fraud": ["chargeback_filed"],
    "maintenance": ["repair_ticket_opened"],
    "houses": [],
    "taxi": ["total_amount", "tip_amount"],
    "bikes": ["casual", "registered"],
    "wine": ["quality_grade"],
    "insurance": ["claim_amount", "claim_count"],
}


# --------------------------------------------------------------------------------------------
# Model families
# --------------------------------------------------------------------------------------------


@dataclass
class Family:
    key: str
    task: str  # classification | regression | stats
    cls: str
    imp: str
    args: str
    grid: dict[str, str]
    name: str
    linear: bool = False
    nan: bool = False
    boosting: bool = False  # supports eval_set early stopping (xgboost / lightgbm)


FAMILIES = {
    f.key: f
    for f in [
        Family("logreg", "classification", "LogisticRegression",
               "from sklearn.linear_model import LogisticRegression", "max_iter=2000",
               {"C": "[0.01, 0.1, 1.0, 10.0]"}, "logistic regression", linear=True),
        Family("rf_c", "classification", "RandomForestClassifier",
               "from sklearn.ensemble import RandomForestClassifier",
               "n_estimators=300, n_jobs=-1, random_state={seed}",
               {"max_depth": "[None, 10, 20]", "min_samples_leaf": "[1, 5, 20]"},
               "random forest"),
        Family("hgb_c", "classification", "HistGradientBoostingClassifier",
               "from sklearn.ensemble import HistGradientBoostingClassifier",
               "random_state={seed}",
               {"learning_rate": "[0.03, 0.1]", "max_leaf_nodes": "[15, 31, 63]"},
               "histogram gradient boosting", nan=True),
        Family("xgb_c", "classification", "XGBClassifier", "from xgboost import XGBClassifier",
               'n_estimators=400, tree_method="hist", random_state={seed}',
               {"max_depth": "[3, 5, 7]", "learning_rate": "[0.03, 0.1]"}, "XGBoost",
               nan=True, boosting=True),
        Family("lgbm_c", "classification", "LGBMClassifier", "from lightgbm import LGBMClassifier",
               "n_estimators=500, verbose=-1, random_state={seed}",
               {"num_leaves": "[15, 31, 63]", "min_child_samples": "[20, 100]"}, "LightGBM",
               nan=True, boosting=True),
        Family("ridge", "regression", "Ridge", "from sklearn.linear_model import Ridge", "",
               {"alpha": "[0.1, 1.0, 10.0, 100.0]"}, "ridge regression", linear=True),
        Family("rf_r", "regression", "RandomForestRegressor",
               "from sklearn.ensemble import RandomForestRegressor",
               "n_estimators=300, n_jobs=-1, random_state={seed}",
               {"max_depth": "[None, 12, 24]", "min_samples_leaf": "[1, 3, 10]"},
               "random forest"),
        Family("hgb_r", "regression", "HistGradientBoostingRegressor",
               "from sklearn.ensemble import HistGradientBoostingRegressor",
               "random_state={seed}",
               {"learning_rate": "[0.03, 0.1]", "max_leaf_nodes": "[15, 31, 63]"},
               "histogram gradient boosting", nan=True),
        Family("xgb_r", "regression", "XGBRegressor", "from xgboost import XGBRegressor",
               'n_estimators=600, tree_method="hist", random_state={seed}',
               {"max_depth": "[4, 6, 8]", "learning_rate": "[0.03, 0.1]"}, "XGBoost",
               nan=True, boosting=True),
        Family("lgbm_r", "regression", "LGBMRegressor", "from lightgbm import LGBMRegressor",
               "n_estimators=600, verbose=-1, random_state={seed}",
               {"num_leaves": "[31, 63, 127]", "min_child_samples": "[20, 50]"}, "LightGBM",
               nan=True, boosting=True),
        Family("gbr", "regression", "GradientBoostingRegressor",
               "from sklearn.ensemble import GradientBoostingRegressor",
               "random_state={seed}",
               {"max_depth": "[2, 3, 4]", "n_estimators": "[200, 500]"}, "gradient boosting"),
        Family("sarimax", "stats", "SARIMAX",
               "from statsmodels.tsa.statespace.sarimax import SARIMAX",
               "", {}, "seasonal ARIMA (SARIMAX)"),
        Family("ets", "stats", "ExponentialSmoothing",
               "from statsmodels.tsa.holtwinters import ExponentialSmoothing", "", {},
               "Holt-Winters exponential smoothing"),
    ]
}


# --------------------------------------------------------------------------------------------
# The context one notebook is generated in
# --------------------------------------------------------------------------------------------

NAME_STYLES = [
    dict(Xtr="X_train", Xte="X_test", ytr="y_train", yte="y_test"),
    dict(Xtr="X_tr", Xte="X_te", ytr="y_tr", yte="y_te"),
    dict(Xtr="train_X", Xte="test_X", ytr="train_y", yte="test_y"),
    dict(Xtr="X_train", Xte="X_valid", ytr="y_train", yte="y_valid"),
]


@dataclass
class Ctx:
    nb_id: str
    d: Domain
    fam: Family
    path: str  # "tab" (classification / regression), "ml" (forecast with features), "stats"
    rng: random.Random
    df: str
    Xtr: str
    Xte: str
    ytr: str
    yte: str
    model: str
    NUM: str
    CAT: str
    FEATS: str
    new: str
    seed: str  # expression used for random_state
    seed_value: int
    test_size: str
    prompt: str
    variants: dict[str, str] = field(default_factory=dict)
    # state written by fragments
    feat_num: list[str] = field(default_factory=list)
    feat_cat: list[str] = field(default_factory=list)
    num_steps: list[str] = field(default_factory=list)
    cat_steps: list[str] = field(default_factory=list)
    prep: str | None = None
    pipe_imputer: str | None = None
    encoding: str = "ct"
    fe_func: str | None = None
    fe_lines: list[str] = field(default_factory=list)  # row-wise lines on "{f}" when inline
    new_imp_pre: list[str] = field(default_factory=list)  # new-data lines, before features
    new_imp_post: list[str] = field(default_factory=list)  # new-data lines, after features
    extra_num: list[str] = field(default_factory=list)  # numeric columns added by imputation
    new_enc: list[str] = field(default_factory=list)  # new-data lines for encodings ("{f}")
    metric_vars: dict[str, str] = field(default_factory=dict)
    metrics_dict: str | None = None
    threshold: str | None = None
    params_expr: str = "{}"
    model_file: str = ""
    search_var: str | None = None
    ser: str = "y"  # statistical forecasting: the series
    feat: str = "feat"  # forecasting: the feature frame
    train_df: str = "train_df"
    test_df: str = "test_df"
    lag_cols: list[str] = field(default_factory=list)
    uses_log_target: bool = False
    notes: dict[str, str] = field(default_factory=dict)
    placed: list = field(default_factory=list)

    @property
    def T(self) -> str:
        return q(self.d.target)

    @property
    def cls(self) -> bool:
        return self.d.task == "classification"

    def grp(self, col: str | None = None) -> str:
        """``df.groupby("store_id")`` for panel series, ``df`` for a single series."""
        col = col or ""
        base = f'{self.df}.groupby("{self.d.series}")' if self.d.series else self.df
        return base + (f"[{q(col)}]" if col else "")

    def est(self, extra: str = "") -> str:
        args = self.fam.args.replace("{seed}", self.seed)
        parts = [a for a in (args, extra) if a]
        return f"{self.fam.cls}({', '.join(parts)})"

    def sub(self, text: str, f: str | None = None) -> str:
        return text.replace("{df}", self.df).replace("{f}", f or self.df)


def balance_arg(c: Ctx) -> str:
    """Class-imbalance handling for the family (used by the better training variants)."""
    if not c.cls or c.d.pos_rate > 0.15:
        return ""
    if c.fam.key == "xgb_c":
        return f"scale_pos_weight=({c.ytr} == 0).sum() / ({c.ytr} == 1).sum()"
    return 'class_weight="balanced"'


def wrap_call(expr: str, indent: int, prefix: int = 0) -> str:
    """Break ``Cls(a, b, c)`` over lines when it would not fit in 95 columns."""
    if len(expr) + indent + prefix <= 95 or "(" not in expr:
        return expr
    name, args = expr.split("(", 1)
    args = args[:-1]
    pad = " " * (indent + 4)
    body = textwrap.fill(args, 95 - indent - 4, break_long_words=False, break_on_hyphens=False)
    return name + "(\n" + textwrap.indent(body, pad) + ",\n" + " " * indent + ")"


def pipeline_expr(c: Ctx, est_expr: str) -> tuple[str, str]:
    """(code of the estimator or pipeline, prefix of its hyper-parameters in a search)."""
    steps = []
    if c.prep:
        steps.append(f'("prep", {c.prep})')
    else:
        if c.pipe_imputer:
            steps.append(f'("impute", {c.pipe_imputer})')
        if c.fam.linear:
            steps.append('("scale", StandardScaler())')
    if not steps:
        return est_expr, ""
    steps.append(f'("model", {wrap_call(est_expr, 4, 11)})')
    return "Pipeline([\n    " + ",\n    ".join(steps) + ",\n])", "model__"


def default_params(c: Ctx, model: str, prefix: str) -> str:
    """Expression for the hyper-parameters of an untuned model (for MLflow)."""
    return f'{model}.named_steps["model"].get_params()' if prefix else f"{model}.get_params()"


def pipeline_imports(c: Ctx) -> list[str]:
    imps = [c.fam.imp]
    if c.prep or c.pipe_imputer or c.fam.linear:
        imps.append("from sklearn.pipeline import Pipeline")
    if not c.prep and c.fam.linear:
        imps.append("from sklearn.preprocessing import StandardScaler")
    if not c.prep and c.pipe_imputer:
        imps.append("from sklearn.impute import SimpleImputer")
    return imps


# --------------------------------------------------------------------------------------------
# Variant registry
# --------------------------------------------------------------------------------------------

Slots = dict[str, list[Cell]]
SLOTS = ["title", "intro", "install", "imports", "load", "eda", "impute_pre", "features",
         "split", "impute_post", "encode", "mlflow_pre", "train", "evaluate", "mlflow", "save",
         "use", "summary"]


@dataclass
class Variant:
    dim: str
    name: str
    score: int | str
    fn: Callable[..., Slots]
    why: str | Callable[[Ctx], str]
    cite: tuple[str, ...]
    marker: str | Callable[[Ctx], str] | None
    paths: tuple[str, ...]
    ok: Callable[[Ctx], bool] | None
    absent: str | Callable[[Ctx], str] | None = None


REG: dict[str, dict[str, Variant]] = {d: {} for d in DIMENSIONS}


def variant(dim: str, name: str, score: int | str, *, why: str | Callable[[Ctx], str],
            cite: tuple[str, ...] = (), marker: str | Callable[[Ctx], str] | None = None,
            paths: tuple[str, ...] = ("tab", "ml", "stats"),
            ok: Callable[[Ctx], bool] | None = None,
            absent: str | Callable[[Ctx], str] | None = None):
    def deco(fn: Callable[..., Slots]) -> Callable[..., Slots]:
        REG[dim][name] = Variant(dim, name, score, fn, why, cite, marker, paths, ok, absent)
        return fn
    return deco


def words(items: list[str]) -> str:
    items = list(items)
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def chosen(c: Ctx, dim: str) -> str:
    return c.variants.get(dim, "")


# ---- shared code pieces -------------------------------------------------------------------


def cv_object(c: Ctx) -> tuple[str, list[str], str]:
    """(CV splitter expression, imports, extra fit kwargs) matching the domain's structure."""
    if c.path == "ml" or c.d.time_split:
        return ("TimeSeriesSplit(n_splits=5)",
                ["from sklearn.model_selection import TimeSeriesSplit"],
                "")
    if c.d.group_col:
        return ("GroupKFold(n_splits=5)", ["from sklearn.model_selection import GroupKFold"],
                ", groups=groups_train")
    if c.cls:
        return (f"StratifiedKFold(n_splits=5, shuffle=True, random_state={c.seed})",
                ["from sklearn.model_selection import StratifiedKFold"], "")
    return (f"KFold(n_splits=5, shuffle=True, random_state={c.seed})",
            ["from sklearn.model_selection import KFold"], "")


def scoring(c: Ctx) -> str:
    if c.cls:
        return "average_precision" if c.d.pos_rate <= 0.15 else "roc_auc"
    return "neg_mean_absolute_error"


def split_cells(c: Ctx) -> list[Cell]:
    """The leakage-free split that fits the domain (stratified, grouped or time-ordered)."""
    d, df = c.d, c.df
    if c.path == "stats":
        n_test = {"W-MON": 12, "h": 7 * 24, "D": 28}[d.freq]
        return [code(f"""
            n_test = {n_test}  # hold out the last {n_test} {d.freq_word}s
            {c.ytr}, {c.yte} = {c.ser}.iloc[:-n_test], {c.ser}.iloc[-n_test:]
            print({c.ytr}.index.max(), "| test:", {c.yte}.index.min(), "->", {c.yte}.index.max())
            """, "split")]
    if c.path == "ml":
        span = {"W-MON": "pd.Timedelta(weeks=12)", "h": "pd.Timedelta(days=14)",
                "D": "pd.Timedelta(days=56)"}[d.freq]
        return [code(f"""
            cutoff = {c.feat}["{d.date}"].max() - {span}
            {c.train_df} = {c.feat}[{c.feat}["{d.date}"] <= cutoff].sort_values("{d.date}")
            {c.test_df} = {c.feat}[{c.feat}["{d.date}"] > cutoff]
            {c.Xtr}, {c.ytr} = {c.train_df}[{c.FEATS}], {c.train_df}[{c.T}]
            {c.Xte}, {c.yte} = {c.test_df}[{c.FEATS}], {c.test_df}[{c.T}]
            print(len({c.train_df}), "train rows,", len({c.test_df}), "test rows after", cutoff)
            """, "split")]
    head = f"X = {df}[{c.FEATS}]\ny = {df}[{c.T}]\n"
    if d.group_col:
        body = f"""
            # all rows of one {d.group_col.replace("_id", "")} stay on the same side of the split
            gss = GroupShuffleSplit(n_splits=1, test_size={c.test_size}, random_state={c.seed})
            train_idx, test_idx = next(gss.split(X, y, groups={df}["{d.group_col}"]))
            {c.Xtr}, {c.Xte} = X.iloc[train_idx].copy(), X.iloc[test_idx].copy()
            {c.ytr}, {c.yte} = y.iloc[train_idx], y.iloc[test_idx]
            groups_train = {df}["{d.group_col}"].iloc[train_idx]
            """
        return [code(head + dedent(body), "split",
                     imports=["from sklearn.model_selection import GroupShuffleSplit"])]
    if d.time_split:
        body = f"""
            # time-ordered split: train on the past, test on the most recent period
            {df} = {df}.sort_values("{d.date}").reset_index(drop=True)
            X, y = {df}[{c.FEATS}], {df}[{c.T}]
            cutoff = {df}["{d.date}"].quantile(1 - {c.test_size})
            train_mask = {df}["{d.date}"] < cutoff
            {c.Xtr}, {c.Xte} = X[train_mask].copy(), X[~train_mask].copy()
            {c.ytr}, {c.yte} = y[train_mask], y[~train_mask]
            """
        return [code(dedent(body), "split")]
    strat = ", stratify=y" if c.cls else ""
    body = f"""
        {c.Xtr}, {c.Xte}, {c.ytr}, {c.yte} = train_test_split(
            X, y, test_size={c.test_size}{strat}, random_state={c.seed})
        print({c.Xtr}.shape, {c.Xte}.shape)
        """
    return [code(head + dedent(body), "split",
                 imports=["from sklearn.model_selection import train_test_split"])]


def split_desc(c: Ctx) -> str:
    if c.path == "stats":
        return "holds out the last weeks of the series" if c.d.freq == "W-MON" else \
            "holds out the most recent period of the series"
    if c.path == "ml":
        return "splits by date (train on the past, test on the last period)"
    if c.d.group_col:
        return f"splits by {c.d.group_col} with GroupShuffleSplit"
    if c.d.time_split:
        return f"splits by {c.d.date} (most recent {c.test_size} as test)"
    return "uses a stratified train/test split" if c.cls else "uses a random train/test split"


def _adjective(d: Domain) -> str:
    return {"W-MON": "weekly", "h": "hourly", "D": "daily"}.get(d.freq, "")


def _season_word(d: Domain) -> str:
    return {"W-MON": "week of year", "h": "hour of day", "D": "day of week"}[d.freq]


def naive_lag(d: Domain) -> int:
    s = d.season
    while s < d.horizon:
        s += d.season
    return s


def season_key(c: Ctx, frame: str) -> str:
    col = f'{frame}["{c.d.date}"]'
    return {"W-MON": f"{col}.dt.isocalendar().week", "h": f"{col}.dt.hour",
            "D": f"{col}.dt.dayofweek"}[c.d.freq]


# --------------------------------------------------------------------------------------------
# Exploratory data analysis
# --------------------------------------------------------------------------------------------


def _target_look(c: Ctx) -> Cell:
    d, df = c.d, c.df
    if c.cls:
        seg = d.cat[0]
        return code(f"""
            print({df}[{c.T}].value_counts(normalize=True).round(4))
            rate_by_{seg} = {df}.groupby("{seg}")[{c.T}].agg(["mean", "size"])
            rate_by_{seg}.sort_values("mean", ascending=False).head(10)
            """, "eda")
    return code(f"""
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        {df}[{c.T}].hist(bins=60, ax=axes[0])
        axes[0].set_title("{d.target}")
        np.log1p({df}[{c.T}]).hist(bins=60, ax=axes[1])
        axes[1].set_title("log1p({d.target})")
        plt.show()
        """, "eda", imports=["import matplotlib.pyplot as plt", "import numpy as np"])


def _eda_ts_coverage(c: Ctx) -> Cell:
    d, df = c.d, c.df
    if d.series:
        cov = f"""
            expected = pd.date_range({df}["{d.date}"].min(), {df}["{d.date}"].max(),
                                     freq="{d.freq}")
            coverage = {df}.groupby("{d.series}")["{d.date}"].nunique() / len(expected)
            print(coverage.describe().round(3))
            """
    else:
        cov = f"""
            expected = pd.date_range({df}["{d.date}"].min(), {df}["{d.date}"].max(),
                                     freq="{d.freq}")
            print("missing timestamps:", len(expected.difference({df}["{d.date}"])))
            """
    extra = f'print("share of zero {d.freq_word}s:", ({df}[{c.T}] == 0).mean().round(3))' \
        if d.zeros else f'print({df}[{c.T}].describe().round(1))'
    return code(dedent(cov) + "\n" + f"print({df}.isna().mean().round(3))\n" + extra, "eda")


def _eda_ts_season(c: Ctx, frame: str) -> Cell:
    d = c.d
    agg = (f'total = {frame}.groupby("{d.date}")[{c.T}].sum(min_count=1)' if d.series
           else f'total = {frame}.set_index("{d.date}")[{c.T}]')
    return code(f"""
        {agg}
        fig, axes = plt.subplots(2, 1, figsize=(12, 7))
        total.plot(ax=axes[0], title="{d.target} over time")
        {frame}.groupby({season_key(c, frame)})[{c.T}].mean().plot(
            ax=axes[1], kind="bar", title="average {d.target} by {_season_word(d)}")
        plt.tight_layout()
        """, "eda", imports=["import matplotlib.pyplot as plt"])


@variant("exploratory_data_analysis", "eda_structured_checks", 3, cite=("eda",),
         marker="isna().mean()",
         why=lambda c: (
             ("{C_eda} check{s_eda} size, types and the share of missing values per column, "
              "look{s_eda} at " + ("the class balance of {target} and its rate by " + c.d.cat[0]
                                   if c.cls else "the distribution of {target} on raw and log "
                                   "scale") if c.path == "tab" else
              "{C_eda} check{s_eda} how complete the calendar is, the share of missing values "
              "per column and " + ("zero " + c.d.freq_word + "s" if c.d.zeros else
                                   "the range of {target}") + ", plot{s_eda} the series and "
              "its seasonal profile")
             + ", and the written findings feed later choices (split, metrics, imputation)."))
def eda_structured(c: Ctx) -> Slots:
    d, df = c.d, c.df
    cells = [md("## Exploratory analysis", "eda_h", optional=True)]
    if c.path == "tab":
        cells.append(code(f"""
            print({df}.shape)
            print({df}.dtypes.value_counts())
            missing = {df}.isna().mean().sort_values(ascending=False)
            missing[missing > 0].round(3)
            """, "eda"))
        cells.append(_target_look(c))
        rel = d.num[0]
        if d.id and d.id != d.date:
            cells.append(code(f"""
                print("duplicate {d.id}:", {df}["{d.id}"].duplicated().sum())
                {df}[{qlist(d.num[:5], 4)} + [{c.T}]].corr(numeric_only=True)[{c.T}].round(3)
                """, "eda"))
        else:
            cells.append(code(f"""
                {df}.plot.scatter(x="{rel}", y={c.T}, alpha=0.2, figsize=(6, 4))
                """, "eda"))
        if c.cls:
            note = (f"The positive class ({d.target_desc}) is about {d.pos_rate:.0%} of rows, so "
                    "the split is stratified and models are compared on ranking metrics, not "
                    "accuracy.")
        else:
            note = (f"{d.target} is right-skewed, so errors are reported in {d.unit} with MAE "
                    "next to RMSE.")
        if d.miss_num:
            note += f" Missing values: {', '.join(d.miss_num)} ({d.miss_why})."
        cells.append(md("**Findings.** " + note, "eda_note"))
    else:
        cells.append(_eda_ts_coverage(c))
        cells.append(_eda_ts_season(c, df))
        note = (f"Strong {'weekly' if d.season == 7 else 'daily' if d.season == 24 else 'yearly'} "
                f"seasonality; the forecast horizon is {d.horizon} {d.freq_word}s, so nothing "
                f"more recent than {d.horizon} {d.freq_word}s before a target can be used.")
        if d.miss_num:
            note += f" Gaps: {d.miss_why}."
        cells.append(md("**Findings.** " + note, "eda_note"))
    return {"eda": cells}


@variant("exploratory_data_analysis", "eda_profile_helper", 3, cite=("eda",),
         marker="def profile(",
         why=lambda c: (
             "{C_eda} build{s_eda} a per-column profile (type, missing share, cardinality), "
             + ("examine{s_eda} " + ("the positive rate and the rate of {target} per "
                                     + (c.d.cat[1] if len(c.d.cat) > 1 else c.d.cat[0])
                                     if c.cls else "the target's spread and its relation to "
                              + c.d.num[0]) if c.path == "tab" else
                "decompose{s_eda} the aggregate series to show trend and seasonality")
             + "; the notes say what this means for the modelling steps."))
def eda_profile(c: Ctx) -> Slots:
    d, df = c.d, c.df
    cells = [md("## Data profile", "eda_h", optional=True), code(f"""
        def profile(frame):
            return pd.DataFrame({{
                "dtype": frame.dtypes.astype(str),
                "missing_share": frame.isna().mean().round(3),
                "n_unique": frame.nunique(),
            }}).sort_values("missing_share", ascending=False)

        profile({df})
        """, "eda")]
    if c.path == "tab":
        if c.cls:
            seg = d.cat[1] if len(d.cat) > 1 else d.cat[0]
            cells.append(code(f"""
                print("positive rate:", {df}[{c.T}].mean().round(4))
                pd.crosstab({df}["{seg}"], {df}[{c.T}], normalize="index").round(3)
                """, "eda"))
        else:
            cells.append(code(f"""
                print({df}[{c.T}].describe(percentiles=[0.05, 0.5, 0.95]).round(1))
                sns.scatterplot(data={df}.sample(2000, random_state={c.seed}), x="{d.num[0]}",
                                y={c.T}, alpha=0.3)
                """, "eda", imports=["import seaborn as sns"]))
        cells.append(md(
            "Notes: " + (f"{d.target} is imbalanced, so stratify and use PR-AUC. " if c.cls and
                         d.pos_rate < 0.3 else "") +
            (f"{', '.join(d.miss_num)} need imputation ({d.miss_why}); the imputer must only "
             "see training rows." if d.miss_num else "No column has missing values."),
            "eda_note"))
    else:
        agg = (f'{df}.groupby("{d.date}")[{c.T}].sum(min_count=1)' if d.series
               else f'{df}.set_index("{d.date}")[{c.T}]')
        cells.append(code(f"""
            agg = {agg}.asfreq("{d.freq}")
            print("missing {d.freq_word}s:", agg.isna().sum())
            STL(agg.interpolate(limit_direction="forward"), period={d.season}).fit().plot()
            plt.show()
            """, "eda", imports=["import matplotlib.pyplot as plt",
                                 "from statsmodels.tsa.seasonal import STL"]))
        cells.append(md(
            f"Notes: clear seasonality with period {d.season}; the gaps ({d.miss_why}) are "
            f"handled before modelling, and features must be at least {d.horizon} "
            f"{d.freq_word}s old to be usable for a {d.horizon}-{d.freq_word} forecast.",
            "eda_note"))
    return {"eda": cells}


@variant("exploratory_data_analysis", "eda_describe_hist", 2, cite=("eda",), marker=".describe()",
         why=lambda c: (
             "{C_eda} show{s_eda} head(), describe() and " + (
                 "histograms of every column" if c.path == "tab" else "a plot of the series")
             + ", but nothing on " + (
                 "the class balance of {target}" if c.cls else "missing values"
                 if c.path == "tab" else "gaps in the calendar or seasonality")
             + (" or the missing values in {miss}" if c.d.miss_num and c.path == "tab" else "")
             + ", and no finding is written down or used later."))
def eda_describe(c: Ctx) -> Slots:
    df, d = c.df, c.d
    cells = [code(f"{df}.head()", "eda"), code(f"{df}.describe()", "eda")]
    if c.path == "tab":
        cells.append(code(f"{df}.hist(figsize=(14, 10), bins=40)\nplt.tight_layout()", "eda",
                          imports=["import matplotlib.pyplot as plt"]))
    else:
        sel = (f'{df}[{df}["{d.series}"] == {df}["{d.series}"].iloc[0]]' if d.series else df)
        cells.append(code(f"""
            {sel}.plot(x="{d.date}", y={c.T}, figsize=(12, 4))
            """, "eda", imports=["import matplotlib.pyplot as plt"]))
    return {"eda": cells}


@variant("exploratory_data_analysis", "eda_heatmap_only", 2, cite=("eda",), marker="heatmap(",
         why=lambda c: (
             "{C_eda} print{s_eda} info() and a correlation heatmap of the numeric columns; info() "
             "shows non-null counts, but the notebook never examines " + (
                 "the target's class balance" if c.cls else "the target's distribution"
                 if c.path == "tab" else "seasonality or the calendar gaps")
             + ", and nothing from the heatmap is acted on."))
def eda_heatmap(c: Ctx) -> Slots:
    df = c.df
    return {"eda": [code(f"{df}.info()", "eda"), code(f"""
        plt.figure(figsize=(10, 8))
        sns.heatmap({df}.corr(numeric_only=True), cmap="coolwarm", center=0)
        plt.title("Correlation matrix")
        plt.show()
        """, "eda", imports=["import matplotlib.pyplot as plt", "import seaborn as sns"])]}


@variant("exploratory_data_analysis", "eda_head_only", 1, cite=("eda",), marker=".head()",
         why="{C_eda} only displays the first rows; the notebook never looks at the target's "
             "distribution, missing values or anything else before modelling.")
def eda_head(c: Ctx) -> Slots:
    return {"eda": [code(f"{c.df}.head()", "eda")]}


@variant("exploratory_data_analysis", "eda_none", 1, cite=("load",),
         marker=lambda c: c.d.files[0],
         why="There is no exploration at all: after loading in {c_load} the notebook goes "
             "straight to {next_step} without looking at the target, missing values or "
             "distributions.")
def eda_none(c: Ctx) -> Slots:
    return {"eda": []}


# --------------------------------------------------------------------------------------------
# Data imputation
# --------------------------------------------------------------------------------------------

CT_FE = {"fe_domain_ct", "fe_domain_target_encoder", "fe_basic_onehot_ct", "fe_leaky_column",
         "fe_target_mean_full"}
LEVEL3_PIPE_IMPUTERS = {"imp_pipeline_median_indicator", "imp_iterative_pipeline"}


def _has_missing(c: Ctx) -> bool:
    return c.d.has_missing


def _cat_fill_line(c: Ctx, frame: str, value: str = "missing") -> str:
    if not c.d.miss_cat:
        return ""
    return f'{frame}[{qlist(c.d.miss_cat)}] = {frame}[{qlist(c.d.miss_cat)}].fillna("{value}")'


@variant("data_imputation", "imp_pipeline_median_indicator", 3, paths=("tab",),
         cite=("@marker", "train"), marker='SimpleImputer(strategy="median", add_indicator=True)',
         ok=_has_missing,
         why="{C_mk} put{s_mk} SimpleImputer(strategy=\"median\", add_indicator=True) (and a "
             "most-frequent imputer for categories) inside the preprocessing pipeline, so it is "
             "fitted only when the pipeline is fitted on the training split in {c_train}; the "
             "indicator columns keep the signal in missing {miss} ({miss_why}), and new data "
             "goes through the same fitted imputer.")
def imp_pipeline(c: Ctx) -> Slots:
    c.num_steps = ['("impute", SimpleImputer(strategy="median", add_indicator=True))']
    c.cat_steps = ['("impute", SimpleImputer(strategy="most_frequent"))']
    c.pipe_imputer = 'SimpleImputer(strategy="median", add_indicator=True)'
    return {"impute_post": [md(
        f"Missing values ({', '.join(c.d.miss_num + c.d.miss_cat)}) are imputed inside the "
        "model pipeline, so the medians are learned from the training rows only and a "
        "missing-value indicator is kept.", "imp_note", optional=True)]}


@variant("data_imputation", "imp_iterative_pipeline", 3, paths=("tab",),
         cite=("@marker", "train"), marker="IterativeImputer(", ok=_has_missing,
         why="{C_mk} use{s_mk} an IterativeImputer with add_indicator=True inside the pipeline: "
             "{miss} {are_miss} modelled from the other columns, the imputer is fitted only on the "
             "training split when the pipeline is fitted ({c_train}), and missingness stays "
             "visible to the model through the indicator columns.")
def imp_iterative(c: Ctx) -> Slots:
    expr = f"IterativeImputer(max_iter=10, random_state={c.seed}, add_indicator=True)"
    c.num_steps = [f'("impute", {expr})']
    c.cat_steps = ['("impute", SimpleImputer(strategy="constant", fill_value="missing"))']
    c.pipe_imputer = expr
    return {"impute_post": [md(
        f"{', '.join(c.d.miss_num)} are correlated with other columns, so they are imputed "
        "with an iterative (model-based) imputer inside the pipeline; it only ever sees "
        "training rows.", "imp_note", optional=True)]}


@variant("data_imputation", "imp_group_median_train", 3, paths=("tab",), cite=("imp",),
         marker=lambda c: f'groupby("{c.d.group_imp[1]}")["{c.d.group_imp[0]}"].median()',
         ok=lambda c: _has_missing(c) and c.variants.get("feature_engineering") in CT_FE and not (
             c.variants.get("feature_engineering") == "fe_target_mean_full"
             and c.d.group_imp[1] == c.d.hicard),
         why="{C_imp} fill{s_imp} {gcol} with the median of its {gby} computed on the training "
             "split only, fall{s_imp} back to training medians for the other numeric columns "
             "and add{s_imp} the flag {gcol}_missing; fill_missing() is applied unchanged to "
             "the test split and "
             "to new data, so nothing from the test rows leaks in.")
def imp_group_median(c: Ctx) -> Slots:
    col, grp = c.d.group_imp
    cat = _cat_fill_line(c, "frame")
    body = f"""
        # {col}: median of the same {grp} in the training rows, else the overall training median
        group_median = {c.Xtr}.groupby("{grp}")["{col}"].median()
        train_median = {c.Xtr}[{c.NUM}].median()

        def fill_missing(frame):
            frame = frame.copy()
            frame["{col}_missing"] = frame["{col}"].isna().astype(int)
            frame["{col}"] = frame["{col}"].fillna(frame["{grp}"].map(group_median))
            frame[{c.NUM}] = frame[{c.NUM}].fillna(train_median)
        """
    body = dedent(body) + ("\n    " + cat if cat else "") + "\n    return frame\n\n"
    body += dedent(f"""
        {c.Xtr}, {c.Xte} = fill_missing({c.Xtr}), fill_missing({c.Xte})
        {c.NUM} = {c.NUM} + ["{col}_missing"]
        {c.FEATS} = {c.NUM} + {c.CAT}
        """)
    c.new_imp_post = ["{f} = fill_missing({f})"]
    return {"impute_post": [md("### Missing values (fitted on the training split)", "imp_h",
                               optional=True), code(body, "imp")]}


@variant("data_imputation", "imp_native_nan_flags", 3, paths=("tab",), cite=("imp",),
         marker='_missing"] = ',
         ok=lambda c: _has_missing(c) and c.fam.nan,
         why="{C_imp} keep{s_imp} NaN in {miss} and add{s_imp} a *_missing flag per column row "
             "by row "
             "(no statistic is fitted, so nothing can leak); {model} handles NaN natively and "
             "learns from the flags that missingness is informative ({miss_why}). The same "
             "lines are applied to new data before scoring.")
def imp_native(c: Ctx) -> Slots:
    d, df = c.d, c.df
    lines = [f"for col in {qlist(d.miss_num)}:",
             f'    {df}[f"{{col}}_missing"] = {df}[col].isna().astype(int)']
    cat = _cat_fill_line(c, df)
    if cat:
        lines.append(cat)
    c.extra_num = [f"{m}_missing" for m in d.miss_num]
    c.new_imp_pre = [ln.replace(df, "{f}") for ln in lines]
    return {"impute_pre": [
        md(f"{c.fam.name} splits on missing values natively, so we keep NaN and add explicit "
           "missing flags instead of inventing values.", "imp_note", optional=True),
        code("# flags computed row by row: no statistics, no leakage\n" + "\n".join(lines),
             "imp")]}


@variant("data_imputation", "imp_train_median_fillna", 2, paths=("tab",), cite=("imp",),
         marker="fillna(train_medians)", ok=_has_missing,
         why="{C_imp} fill{s_imp} numeric NaNs with medians computed on the training split only "
             "and reuse{s_imp} them for the test split, so there is no leakage; but it is one "
             "global "
             "median per column with no missingness indicator, although {miss} {are_miss} "
             "missing for "
             "a reason ({miss_why}).")
def imp_train_median(c: Ctx) -> Slots:
    lines = [f"train_medians = {c.Xtr}[{c.NUM}].median()",
             f"{c.Xtr}[{c.NUM}] = {c.Xtr}[{c.NUM}].fillna(train_medians)",
             f"{c.Xte}[{c.NUM}] = {c.Xte}[{c.NUM}].fillna(train_medians)"]
    c.new_imp_post = ["{f}[" + c.NUM + "] = {f}[" + c.NUM + "].fillna(train_medians)"]
    if c.d.miss_cat and c.variants.get("feature_engineering") in CT_FE:
        for x in (c.Xtr, c.Xte):
            lines.append(_cat_fill_line(c, x, "unknown"))
        c.new_imp_post.append(_cat_fill_line(c, "{f}", "unknown"))
    return {"impute_post": [code("\n".join(lines), "imp")]}


@variant("data_imputation", "imp_train_mean_imputer", 2, paths=("tab",), cite=("imp",),
         marker=lambda c: f"num_imputer.fit({c.Xtr}[{c.NUM}])", ok=_has_missing,
         why="{C_imp} fit{s_imp} a mean SimpleImputer on the training split and transform{s_imp} "
             "train and test with it (no leakage), but the mean is pulled by the skew of "
             "{miss}, nothing flags which values were imputed, and the imputer lives outside "
             "the model pipeline, so scoring code has to remember to call it.")
def imp_train_mean(c: Ctx) -> Slots:
    lines = ['num_imputer = SimpleImputer(strategy="mean")',
             f"num_imputer.fit({c.Xtr}[{c.NUM}])",
             f"{c.Xtr}[{c.NUM}] = num_imputer.transform({c.Xtr}[{c.NUM}])",
             f"{c.Xte}[{c.NUM}] = num_imputer.transform({c.Xte}[{c.NUM}])"]
    c.new_imp_post = ["{f}[" + c.NUM + "] = num_imputer.transform({f}[" + c.NUM + "])"]
    if c.d.miss_cat and c.variants.get("feature_engineering") in CT_FE:
        for x in (c.Xtr, c.Xte):
            lines.append(_cat_fill_line(c, x, "unknown"))
        c.new_imp_post.append(_cat_fill_line(c, "{f}", "unknown"))
    return {"impute_post": [code("\n".join(lines), "imp",
                                 imports=["from sklearn.impute import SimpleImputer"])]}


@variant("data_imputation", "imp_dropna_reported", 2, paths=("tab",), cite=("imp",),
         marker=".dropna(subset=",
         ok=lambda c: _has_missing(c) and c.d.key not in {"readmission", "credit", "churn"},
         why="{C_imp} drop{s_imp} rows with missing {miss} and report{s_imp} how many were lost; "
             "no leakage, but the model only learns from rows where these were recorded "
             "({miss_why}), and new rows with gaps cannot be scored at all.")
def imp_dropna_reported(c: Ctx) -> Slots:
    d, df = c.d, c.df
    cols = qlist(d.miss_num + d.miss_cat)
    body = f"""
        n_before = len({df})
        {df} = {df}.dropna(subset={cols})
        print(f"dropped {{n_before - len({df})}} rows ({{1 - len({df}) / n_before:.1%}}) with "
               "missing values")
        """
    c.new_imp_pre = ["{f} = {f}.dropna(subset=" + cols + ")"]
    return {"impute_pre": [code(body, "imp")]}


@variant("data_imputation", "imp_imputer_fit_before_split", 1, paths=("tab",),
         cite=("imp", "split"), marker=lambda c: f"imputer.fit_transform({c.df}[",
         ok=_has_missing,
         why="{C_imp} fit{s_imp} SimpleImputer on the full frame before the train/test split in "
             "{c_split}, so the test rows contribute to the means used to fill the training "
             "rows (leakage) and the test score is no longer an honest hold-out estimate; there "
             "is also no indicator for the informative gaps in {miss}.")
def imp_before_split(c: Ctx) -> Slots:
    d, df = c.d, c.df
    cols = qlist(d.miss_num)
    strategy = c.rng.choice(["mean", "median"])
    lines = [f"impute_cols = {cols}", f'imputer = SimpleImputer(strategy="{strategy}")',
             f"{df}[impute_cols] = imputer.fit_transform({df}[impute_cols])"]
    cat = _cat_fill_line(c, df, "unknown")
    if cat:
        lines.append(cat)
    c.new_imp_pre = ["{f}[impute_cols] = imputer.transform({f}[impute_cols])"]
    if cat:
        c.new_imp_pre.append(_cat_fill_line(c, "{f}", "unknown"))
    return {"impute_pre": [code("\n".join(lines), "imp",
                                imports=["from sklearn.impute import SimpleImputer"])]}


@variant("data_imputation", "imp_fillna_zero", 1, paths=("tab",), cite=("imp",),
         marker=".fillna(0)", ok=_has_missing,
         why="{C_imp} replace{s_imp} every missing value with 0: a 0 for {miss} is a real and "
             "usually implausible value, so the gaps ({miss_why}) turn into fake data points "
             "that distort the distributions and the model; nothing marks which values were "
             "filled.")
def imp_zero(c: Ctx) -> Slots:
    c.new_imp_pre = ["{f} = {f}.fillna(0)"]
    return {"impute_pre": [code(f"{c.df} = {c.df}.fillna(0)", "imp")]}


@variant("data_imputation", "imp_dropna_silent", 1, paths=("tab",), cite=("imp",),
         marker=lambda c: f"{c.df} = {c.df}.dropna()", ok=_has_missing,
         why="{C_imp} silently drop{s_imp} every row with any missing value, in any column: "
             "{miss} {are_miss} often missing ({miss_why}), so a large and non-random share of the "
             "data disappears without being counted, and the scoring code does nothing about "
             "gaps in new rows.")
def imp_dropna_silent(c: Ctx) -> Slots:
    return {"impute_pre": [code(f"{c.df} = {c.df}.dropna()", "imp")]}


@variant("data_imputation", "imp_na_assert_complete", NA, paths=("tab",), cite=("imp",),
         marker=".isna().sum().sum() == 0", ok=lambda c: not _has_missing(c),
         why="{C_imp} assert{s_imp} that no column has a missing value, so there is nothing to "
             "impute; the check would fail loudly if a future extract had gaps.")
def imp_na_assert(c: Ctx) -> Slots:
    return {"impute_pre": [code(f"""
        assert {c.df}.isna().sum().sum() == 0, "unexpected missing values"
        print("no missing values in", {c.df}.shape[1], "columns")
        """, "imp")]}


@variant("data_imputation", "imp_na_table_checked", NA, paths=("tab",), cite=("imp",),
         marker=".isna().sum()", ok=lambda c: not _has_missing(c),
         why="{C_imp} list{s_imp} the missing values per column and state{s_imp} that every "
             "count is zero, so no imputation step is needed for this data.")
def imp_na_table(c: Ctx) -> Slots:
    return {"impute_pre": [code(f"{c.df}.isna().sum()", "imp"),
                           md("Every column is complete (all missing counts are 0), so no "
                              "imputation is needed.", "imp")]}


# ---- forecasting ---------------------------------------------------------------------------


def _exog_missing(d: Domain) -> list[str]:
    return [m for m in d.miss_num if m != d.target]


@variant("data_imputation", "imp_ts_keep_gaps", 3, paths=("ml",), cite=("imp", "fe"),
         marker="gap_share",
         why=lambda c: (
             "{C_imp} measure{s_imp} the gaps per series"
             + (", carr{ies_imp} " + words(_exog_missing(c.d)) + " forward by at most two "
                + c.d.freq_word + "s using past values only" if _exog_missing(c.d) else "")
             + " and leave{s_imp} gaps in {target} as NaN, so no invented values become "
               "training targets or test truth; rows whose target or lags fall into a gap are "
               "dropped when the model frame is built in {c_fe}."))
def imp_ts_keep(c: Ctx) -> Slots:
    d, df = c.d, c.df
    if d.series:
        lines = [f'gap_share = {df}.groupby("{d.series}")[{c.T}].apply(lambda s: s.isna().mean())',
                 "print(gap_share.describe().round(3))"]
    else:
        lines = [f"gap_share = {df}[{c.T}].isna().mean()",
                 'print(f"{gap_share:.2%} of hours have no reading")']
    for col in _exog_missing(d):
        src = f'{df}.groupby("{d.series}")["{col}"]' if d.series else f'{df}["{col}"]'
        lines.append("# exogenous gaps: last known value, at most 2 periods, past values only")
        lines.append(f'{df}["{col}"] = {src}.ffill(limit=2)')
    lines.append(f"# gaps in {d.target} stay NaN: never used as targets, lags into them stay NaN")
    return {"impute_pre": [code("\n".join(lines), "imp")]}


@variant("data_imputation", "imp_ts_ffill_unbounded", 2, paths=("ml",), cite=("imp",),
         marker=".ffill()",
         why="{C_imp} forward-fill{s_imp} {miss} within each series: past values only, so no "
             "leakage, but without a limit or a flag long outages become flat runs of copied "
             "{target}, and copied values in the test period are then scored as if observed.")
def imp_ts_ffill(c: Ctx) -> Slots:
    d, df = c.d, c.df
    cols = qlist(d.miss_num)
    src = f'{df}.groupby("{d.series}")[{cols}]' if d.series else f"{df}[{cols}]"
    return {"impute_pre": [code(f"{df}[{cols}] = {src}.ffill()", "imp")]}


@variant("data_imputation", "imp_ts_interpolate_both", 1, paths=("ml",), cite=("imp", "split"),
         marker='limit_direction="both"',
         why="{C_imp} interpolate{s_imp} {target} in both directions over the whole history "
             "before the split in {c_split}: gaps are filled from values that lie in the future, "
             "including the test period, and interpolated test values are later scored as if "
             "they were observed, which flatters the evaluation.")
def imp_ts_interp(c: Ctx) -> Slots:
    d, df = c.d, c.df
    if d.series:
        line = (f'{df}[{c.T}] = {df}.groupby("{d.series}")[{c.T}].transform(\n'
                '    lambda s: s.interpolate(limit_direction="both"))')
    else:
        line = f'{df}[{c.T}] = {df}[{c.T}].interpolate(limit_direction="both")'
    extra = [f'{df}["{x}"] = {df}["{x}"].interpolate(limit_direction="both")'
             for x in _exog_missing(d)]
    return {"impute_pre": [code("\n".join([line] + extra), "imp")]}


@variant("data_imputation", "imp_ts_global_mean", 1, paths=("ml",), cite=("imp", "split"),
         marker=".fillna(", why="{C_imp} fill{s_imp} gaps in {miss} with the mean over all "
         "series and the whole period, test included, before the split in {c_split}: test "
         "data leaks into training, and a pooled mean is the wrong level for most series and "
         "wipes out the seasonality at each gap.")
def imp_ts_mean(c: Ctx) -> Slots:
    cols = qlist(c.d.miss_num)
    return {"impute_pre": [code(f"""
        gap_cols = {cols}
        {c.df}[gap_cols] = {c.df}[gap_cols].fillna({c.df}[gap_cols].mean())
        """, "imp")]}


LAG_FE = {"fe_ts_lag_function", "fe_ts_lags_fourier", "fe_ts_unshifted_rolling",
          "fe_ts_short_lags"}


@variant("data_imputation", "imp_ts_drop_then_shift", 1, paths=("ml",), cite=("imp", "fe"),
         marker="dropna(subset=[",
         ok=lambda c: c.variants.get("feature_engineering") in LAG_FE,
         why="{C_imp} drop{s_imp} the rows whose {target} is missing and {c_fe} then builds "
             "lags with shift(): once rows are gone, shift(k) no longer means k {freq_word}s "
             "back, so lag features after every gap silently point at the wrong periods.")
def imp_ts_drop(c: Ctx) -> Slots:
    return {"impute_pre": [code(
        f"{c.df} = {c.df}.dropna(subset=[{c.T}]).reset_index(drop=True)", "imp")]}


@variant("data_imputation", "imp_stats_interp_train", 3, paths=("stats",), cite=("imp",),
         marker=lambda c: f"{c.ytr}.interpolate(",
         why="{C_imp} interpolate{s_imp} only short gaps (limit 3) and only in the training "
             "window, after the split; gaps in the test window are dropped from scoring instead "
             "of being invented, so the evaluation compares the forecast with observed values "
             "only.")
def imp_stats_interp(c: Ctx) -> Slots:
    tail = ".ffill()" if c.fam.key == "ets" else ""
    note = ("  # longer outages: last value (ETS needs a complete series)" if tail else "")
    return {"impute_post": [code(f"""
        {c.ytr} = {c.ytr}.interpolate(method="time", limit=3){tail}{note}
        {c.yte} = {c.yte}.dropna()  # gaps in the test window are not scored
        print("gaps left in training:", {c.ytr}.isna().sum())
        """, "imp")]}


@variant("data_imputation", "imp_stats_ffill", 2, paths=("stats",), cite=("imp",),
         marker=lambda c: f"{c.ser} = {c.ser}.ffill()",
         why="{C_imp} forward-fill{s_imp} the whole series: past values only, so no leakage, "
             "but long gaps become flat segments with no limit or flag, and filled values in "
             "the test window are scored as if observed.")
def imp_stats_ffill(c: Ctx) -> Slots:
    return {"impute_pre": [code(f"""
        print("missing {c.d.freq_word}s:", {c.ser}.isna().sum())
        {c.ser} = {c.ser}.ffill()
        """, "imp")]}


@variant("data_imputation", "imp_stats_interp_both", 1, paths=("stats",), cite=("imp", "split"),
         marker='limit_direction="both"',
         why="{C_imp} interpolate{s_imp} the full series in both directions before the split "
             "in {c_split}: training gaps next to the cut-off are filled from test values, and "
             "interpolated values inside the test window are then scored as observations.")
def imp_stats_interp_both(c: Ctx) -> Slots:
    return {"impute_pre": [code(
        f'{c.ser} = {c.ser}.interpolate(limit_direction="both")', "imp")]}


@variant("data_imputation", "imp_stats_mean", 1, paths=("stats",), cite=("imp", "split"),
         marker=lambda c: f"{c.ser}.fillna({c.ser}.mean())",
         why="{C_imp} fill{s_imp} gaps with the mean of the entire series, test window included, "
             "before the split in {c_split}: the test period leaks into training, and a flat "
             "mean ignores the level and seasonality around each gap.")
def imp_stats_mean(c: Ctx) -> Slots:
    return {"impute_pre": [code(f"{c.ser} = {c.ser}.fillna({c.ser}.mean())", "imp")]}


# --------------------------------------------------------------------------------------------
# Feature engineering
# --------------------------------------------------------------------------------------------


def _lists_cell_lines(c: Ctx, num: list[str], cat: list[str]) -> list[str]:
    num = num + [x for x in c.extra_num if x not in num]
    c.feat_num, c.feat_cat = num, cat
    return [f"{c.NUM} = {qlist(num)}", f"{c.CAT} = {qlist(cat)}", f"{c.FEATS} = {c.NUM} + {c.CAT}"]


def _fe_lines(c: Ctx, lines: list[str], frame: str) -> str:
    return "\n".join(ln.replace("{f}", frame) for ln in lines)


def _ct_cell(c: Ctx, cat_encoder: str, cat_cols: str | None = None,
             extra: list[str] | None = None, imports: list[str] | None = None) -> Cell:
    num_steps = list(c.num_steps)
    imps = ["from sklearn.compose import ColumnTransformer"] + (imports or [])
    if c.fam.linear:
        num_steps.append('("scale", StandardScaler())')
        imps.append("from sklearn.preprocessing import StandardScaler")
    if c.num_steps or c.cat_steps:
        imps.append("from sklearn.pipeline import Pipeline")
    if any("SimpleImputer" in s for s in c.num_steps + c.cat_steps):
        imps.append("from sklearn.impute import SimpleImputer")
    if any("IterativeImputer" in s for s in c.num_steps):
        imps += ["from sklearn.experimental import enable_iterative_imputer",
                 "from sklearn.impute import IterativeImputer"]
    lines = []
    if num_steps:
        lines.append("numeric_pipe = Pipeline([\n    " + ",\n    ".join(num_steps) + ",\n])")
        num_expr = "numeric_pipe"
    else:
        num_expr = '"passthrough"'
    if c.cat_steps:
        lines.append("categorical_pipe = Pipeline([\n    " + ",\n    ".join(
            c.cat_steps + [f'("encode", {cat_encoder})']) + ",\n])")
        cat_expr = "categorical_pipe"
    else:
        cat_expr = cat_encoder
    trans = [f'("num", {num_expr}, {c.NUM})']
    if c.feat_cat:
        trans.append(f'("cat", {cat_expr}, {cat_cols or c.CAT})')
    trans += extra or []
    lines.append("preprocess = ColumnTransformer([\n    " + ",\n    ".join(trans) + ",\n])")
    c.prep = "preprocess"
    c.encoding = "ct"
    return code("\n".join(lines), "enc", imports=imps)


def _onehot(c: Ctx) -> tuple[str, list[str]]:
    if c.fam.key in {"hgb_c", "hgb_r", "lgbm_c", "lgbm_r", "xgb_c", "xgb_r"} and \
            c.rng.random() < 0.5:
        return ('OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)',
                ["from sklearn.preprocessing import OrdinalEncoder"])
    return ('OneHotEncoder(handle_unknown="ignore", min_frequency=20)',
            ["from sklearn.preprocessing import OneHotEncoder"])


def _fe3_names(c: Ctx) -> str:
    return words(c.d.fe3_num + c.d.fe3_cat)


@variant("feature_engineering", "fe_domain_ct", 3, paths=("tab",), cite=("fe", "enc"),
         marker="def add_features(frame):",
         why="{C_fe} add{s_fe} features that are known at prediction time and make sense for "
             "the domain ({fe3}) in one add_features() function that is reused for new data, "
             "and {c_enc} encodes the categorical columns inside a ColumnTransformer that is "
             "fitted with the model on training rows only, with unseen categories handled.")
def fe_domain_ct(c: Ctx) -> Slots:
    d = c.d
    body = "def add_features(frame):\n    frame = frame.copy()\n"
    body += ind(_fe_lines(c, d.fe3, "frame")) + "\n    return frame\n\n"
    body += f"{c.df} = add_features({c.df})\n"
    body += "\n".join(_lists_cell_lines(c, d.num + d.fe3_num, d.cat + d.fe3_cat))
    c.fe_func = "add_features"
    enc, imps = _onehot(c)
    return {"features": [md("### Features\n" + d.fe3_md, "fe_note", optional=True),
                         code(body, "fe", imports=["import numpy as np"] if "np." in body
                              else [])],
            "encode": [_ct_cell(c, enc, imports=imps)]}


@variant("feature_engineering", "fe_domain_target_encoder", 3, paths=("tab",), cite=("fe", "enc"),
         marker="TargetEncoder(", ok=lambda c: c.d.hicard is not None,
         why="{C_fe} derive{s_fe} domain features available at prediction time ({fe3}); in "
             "{c_enc} the high-cardinality {hicard} goes through sklearn's TargetEncoder, which "
             "cross-fits its encoding inside the pipeline so no row sees its own label, and the "
             "remaining categories are one-hot encoded with unknown categories ignored.")
def fe_domain_te(c: Ctx) -> Slots:
    d = c.d
    body = "def engineer(frame):\n    frame = frame.copy()\n"
    body += ind(_fe_lines(c, d.fe3, "frame")) + "\n    return frame\n\n"
    body += f"{c.df} = engineer({c.df})\n"
    others = [x for x in d.cat + d.fe3_cat if x != d.hicard]
    body += "\n".join(_lists_cell_lines(c, d.num + d.fe3_num, others + [d.hicard]))
    c.fe_func = "engineer"
    ttype = "binary" if c.cls else "continuous"
    enc = f"TargetEncoder(target_type=\"{ttype}\", random_state={c.seed})"
    extra = [f'("{d.hicard}_te", {enc}, ["{d.hicard}"])']
    cell = _ct_cell(c, 'OneHotEncoder(handle_unknown="ignore")', cat_cols=qlist(others),
                    extra=extra, imports=["from sklearn.preprocessing import OneHotEncoder",
                                          "from sklearn.preprocessing import TargetEncoder"])
    return {"features": [md("### Feature engineering\n" + d.fe3_md, "fe_note", optional=True),
                         code(body, "fe", imports=["import numpy as np"] if "np." in body
                              else [])],
            "encode": [cell]}


@variant("feature_engineering", "fe_basic_onehot_ct", 2, paths=("tab",), cite=("fe", "enc"),
         marker=lambda c: c.d.fe2[0].replace("{f}", c.df),
         why="{C_fe} derive{s_fe} nothing beyond {fe2}; encoding in {c_enc} is sound (one-hot "
             "inside the pipeline, unknown categories ignored), but nothing domain-specific is "
             "built, e.g. {fe3_hint}.")
def fe_basic_ct(c: Ctx) -> Slots:
    d = c.d
    c.fe_lines = list(d.fe2)
    body = _fe_lines(c, d.fe2, c.df) + "\n" + "\n".join(
        _lists_cell_lines(c, d.num + d.fe2_num, d.cat))
    return {"features": [code(body, "fe")],
            "encode": [_ct_cell(c, 'OneHotEncoder(handle_unknown="ignore")',
                                imports=["from sklearn.preprocessing import OneHotEncoder"])]}


@variant("feature_engineering", "fe_dummies_full_frame", 2, paths=("tab",), cite=("fe",),
         marker="pd.get_dummies(",
         why="{C_fe} add{s_fe} only {fe2} and one-hot encode{s_fe} the categories with "
             "pd.get_dummies on the full frame: valid, but there are no domain features (e.g. "
             "{fe3_hint}), and the dummy columns are fixed outside any pipeline, so new data "
             "has to be re-aligned to dummy_cols by hand.")
def fe_dummies(c: Ctx) -> Slots:
    d, df = c.d, c.df
    c.fe_lines = list(d.fe2)
    cats = qlist(d.cat)
    lines = [_fe_lines(c, d.fe2, df),
             f"dummies = pd.get_dummies({df}[{cats}], prefix={cats}, dtype=int)",
             "dummy_cols = list(dummies.columns)",
             f"{df} = pd.concat([{df}, dummies], axis=1)"]
    num = d.num + d.fe2_num + [x for x in c.extra_num]
    c.feat_num, c.feat_cat = num, []
    lines += [f"{c.NUM} = {qlist(num)}", f"{c.CAT} = {cats}",
              f"{c.FEATS} = {c.NUM} + dummy_cols",
              f'print(len({c.FEATS}), "features")']
    c.encoding = "dummies"
    c.new_enc = ["{f} = pd.concat([{f}, pd.get_dummies({f}[" + c.CAT + "], prefix=" + c.CAT
                 + ", dtype=int)\n    .reindex(columns=dummy_cols, fill_value=0)], axis=1)"]
    return {"features": [code("\n".join(lines), "fe")]}


@variant("feature_engineering", "fe_label_encoded", 2, paths=("tab",), cite=("fe",),
         marker="LabelEncoder()", ok=lambda c: not c.fam.linear,
         why="{C_fe} add{s_fe} {fe2} and label-encode{s_fe} the categorical columns on the full "
             "frame; acceptable for a tree model, but there are no domain features (e.g. "
             "{fe3_hint}) and LabelEncoder.transform will raise on any category that was not "
             "in the training extract.")
def fe_label(c: Ctx) -> Slots:
    d, df = c.d, c.df
    c.fe_lines = list(d.fe2)
    lines = [_fe_lines(c, d.fe2, df), "encoders = {}", f"for col in {qlist(d.cat)}:",
             "    encoders[col] = LabelEncoder()",
             f"    {df}[col] = encoders[col].fit_transform({df}[col].astype(str))"]
    lines += _lists_cell_lines(c, d.num + d.fe2_num, d.cat)
    c.encoding = "label"
    c.new_enc = ["for col in " + c.CAT + ":\n    {f}[col] = encoders[col].transform({f}[col]"
                 ".astype(str))"]
    return {"features": [code("\n".join(lines), "fe",
                              imports=["from sklearn.preprocessing import LabelEncoder"])]}


@variant("feature_engineering", "fe_leaky_column", 1, paths=("tab",), cite=("fe",),
         marker=lambda c: q(c.d.leak[0]), ok=lambda c: c.d.leak is not None,
         why="{C_fe} put{s_fe} {leak} into the feature list, but {leak_why}: the test score "
             "will look excellent while the model cannot work on {new_desc}, where {leak} does "
             "not exist yet.")
def fe_leaky(c: Ctx) -> Slots:
    d = c.d
    col, _, line = d.leak
    lines = list(d.fe3[:3]) if c.rng.random() < 0.5 else list(d.fe2)
    if line:
        lines.append(line)
    c.fe_lines = lines
    fe_num = [x for x in d.fe3_num + d.fe2_num if any(f'"{x}"]' in ln for ln in lines)]
    is_num = col != "quality_grade"
    num = d.num + fe_num + ([col] if is_num else [])
    cat = d.cat + ([] if is_num else [col])
    body = _fe_lines(c, lines, c.df) + "\n" + "\n".join(_lists_cell_lines(c, num, cat))
    return {"features": [code(body, "fe"),
                         ],
            "encode": [_ct_cell(c, 'OneHotEncoder(handle_unknown="ignore")',
                                imports=["from sklearn.preprocessing import OneHotEncoder"])]}


@variant("feature_engineering", "fe_target_mean_full", 1, paths=("tab",), cite=("fe", "split"),
         marker=lambda c: f'groupby("{c.d.hicard}")[{c.T}].mean()',
         ok=lambda c: c.d.hicard is not None,
         why="{C_fe} replace{s_fe} {hicard} by the mean of {target} per {hicard} computed on "
             "all rows before the split in {c_split}: every training and test row's own label "
             "is part of its encoding (target leakage), worst for rare {hicard} values, so the "
             "test score is inflated.")
def fe_te_full(c: Ctx) -> Slots:
    d, df = c.d, c.df
    h = d.hicard
    lines = list(d.fe2) + [f'{{f}}["{h}_target_mean"] = {{f}}["{h}"].map({h}_rate)']
    c.fe_lines = lines
    body = (f'{h}_rate = {df}.groupby("{h}")[{c.T}].mean()\n' + _fe_lines(c, lines, df) + "\n"
            + "\n".join(_lists_cell_lines(c, d.num + d.fe2_num + [f"{h}_target_mean"],
                                          [x for x in d.cat if x != h])))
    return {"features": [code(body, "fe")],
            "encode": [_ct_cell(c, 'OneHotEncoder(handle_unknown="ignore")',
                                imports=["from sklearn.preprocessing import OneHotEncoder"])]}


@variant("feature_engineering", "fe_numeric_only", 1, paths=("tab",), cite=("fe",),
         marker='select_dtypes(include="number")', ok=lambda c: len(c.d.cat) >= 3,
         why=lambda c: (
             "{C_fe} keep{s_fe} only the numeric columns, so {cats} are dropped although they "
             "carry much of the signal, and " + (
                 "nothing is derived from " + c.d.date if c.d.date else "nothing is derived")
             + "; no feature engineering at all."))
def fe_numeric(c: Ctx) -> Slots:
    d, df = c.d, c.df
    drop = [d.target] + ([d.id] if d.id else []) + POST_COLS.get(d.key, [])
    body = f"""
        non_features = {qlist(drop)}
        {c.FEATS} = [col for col in {df}.select_dtypes(include="number").columns
                     if col not in non_features]
        {c.NUM}, {c.CAT} = {c.FEATS}, []
        print({c.FEATS})
        """
    c.feat_num, c.feat_cat = list(d.num), []
    c.encoding = "none"
    return {"features": [code(body, "fe")]}


# ---- forecasting ---------------------------------------------------------------------------


def _calendar(c: Ctx, frame: str) -> tuple[list[str], list[str]]:
    d = c.d
    col = f'{frame}["{d.date}"]'
    if d.freq == "W-MON":
        return ([f'{frame}["week_of_year"] = {col}.dt.isocalendar().week.astype(int)',
                 f'{frame}["month"] = {col}.dt.month'], ["week_of_year", "month"])
    if d.freq == "h":
        return ([f'{frame}["hour"] = {col}.dt.hour', f'{frame}["dow"] = {col}.dt.dayofweek'],
                ["hour", "dow"])
    return ([f'{frame}["dow"] = {col}.dt.dayofweek', f'{frame}["month"] = {col}.dt.month'],
            ["dow", "month"])


def _roll(d: Domain) -> int:
    return {"W-MON": 8, "h": 24, "D": 7}[d.freq]


def _ts_finish(c: Ctx, frame: str, feats: list[str], lag_cols: str | None) -> str:
    c.feat = "model_df"
    subset = f"{lag_cols} + [{c.T}]" if lag_cols else f"[{c.T}]"
    return (f"{c.FEATS} = {qlist(feats)}\n"
            f"model_df = {frame}.dropna(subset={subset})\n"
            f'print(len(model_df), "rows,", len({c.FEATS}), "features")')


@variant("feature_engineering", "fe_ts_lag_function", 3, paths=("ml",), cite=("fe",),
         marker="for lag in LAGS:",
         why="{C_fe} build{s_fe} features in make_features(): lags of {lags} {freq_word}s (none "
             "shorter than the {H}-{freq_word} horizon, so all are known when the forecast is "
             "made), a rolling level shifted by the horizon, calendar terms and the exogenous "
             "{exog} that are known in advance; everything is computed per series and the "
             "same function builds the future rows.")
def fe_ts_lags(c: Ctx) -> Slots:
    d = c.d
    g = (f'frame.groupby("{d.series}")["{d.target}"]' if d.series else f'frame["{d.target}"]')
    cal, cal_cols = _calendar(c, "frame")
    r = _roll(d)
    roll = (f'frame["roll_mean_{r}"] = g.transform(lambda s: s.shift({d.horizon}).rolling({r})'
            f'.mean())' if d.series else
            f'frame["roll_mean_{r}"] = g.shift({d.horizon}).rolling({r}).mean()')
    body = f"LAGS = {d.lags}\n\n\ndef make_features(frame):\n    frame = frame.copy()\n"
    body += f"    g = {g}\n    for lag in LAGS:\n        frame[f\"lag_{{lag}}\"] = g.shift(lag)\n"
    body += (f"    # level of the {r} {d.freq_word}s that end {d.horizon} {d.freq_word}s before"
             f" the target\n")
    body += ind("\n".join([roll] + cal)) + "\n    return frame\n\n\n"
    body += f"full = make_features({c.df})\nlag_cols = [f\"lag_{{lag}}\" for lag in LAGS]\n"
    feats = [f"lag_{x}" for x in d.lags] + [f"roll_mean_{r}"] + cal_cols + d.exog
    body += _ts_finish(c, "full", feats, "lag_cols").replace(
        qlist([f"lag_{x}" for x in d.lags]) + " + ", "")
    body = body.replace(f"{c.FEATS} = {qlist(feats)}",
                        f"{c.FEATS} = lag_cols + {qlist(feats[len(d.lags):])}")
    c.fe_func = "make_features"
    c.lag_cols = [f"lag_{x}" for x in d.lags]
    return {"features": [md("### Features\nEvery feature must be known "
                            f"{d.horizon} {d.freq_word}s ahead, so lags start at the horizon.",
                            "fe_note", optional=True), code(body, "fe")]}


@variant("feature_engineering", "fe_ts_lags_fourier", 3, paths=("ml",), cite=("fe",),
         marker="np.sin(2 * np.pi",
         why="{C_fe} add{s_fe} lags of {lags} {freq_word}s (all at least the {H}-{freq_word} "
             "horizon, so they exist at forecast time) per series, Fourier terms for the "
             "seasonal cycle and the known-in-advance {exog}; the same lines are rerun on "
             "history plus future rows when forecasting.")
def fe_ts_fourier(c: Ctx) -> Slots:
    d = c.d
    src = (f'{{f}}.groupby("{d.series}")["{d.target}"]' if d.series else f'{{f}}["{d.target}"]')
    pos = {"W-MON": ('{f}["' + d.date + '"].dt.isocalendar().week.astype(int)', 52),
           "h": ('{f}["' + d.date + '"].dt.hour', 24),
           "D": ('{f}["' + d.date + '"].dt.dayofweek', 7)}[d.freq]
    lines = [f"for lag in {d.lags}:", f'    {{f}}[f"lag_{{lag}}"] = {src}.shift(lag)',
             f"season_pos = {pos[0]}", "for k in (1, 2):",
             f'    {{f}}[f"sin_{{k}}"] = np.sin(2 * np.pi * k * season_pos / {pos[1]})',
             f'    {{f}}[f"cos_{{k}}"] = np.cos(2 * np.pi * k * season_pos / {pos[1]})']
    c.fe_lines = lines
    lag_cols = [f"lag_{x}" for x in d.lags]
    feats = lag_cols + ["sin_1", "cos_1", "sin_2", "cos_2"] + d.exog
    body = _fe_lines(c, lines, c.df) + "\n" + _ts_finish(c, c.df, feats, qlist(lag_cols))
    c.lag_cols = lag_cols
    return {"features": [code(body, "fe", imports=["import numpy as np"])]}


@variant("feature_engineering", "fe_ts_calendar_only", 2, paths=("ml",), cite=("fe",),
         marker=lambda c: _calendar(c, c.df)[0][0],
         why="{C_fe} use{s_fe} only calendar fields, the series identity and the exogenous "
             "{exog}: all known in advance, so nothing leaks, but without lags or a recent "
             "level the model cannot follow trends or recent shifts in {target}.")
def fe_ts_calendar(c: Ctx) -> Slots:
    d = c.d
    cal, cal_cols = _calendar(c, "{f}")
    lines = list(cal)
    feats = cal_cols + d.exog
    pre = ""
    if d.series:
        pre = (f'series_codes = {{s: i for i, s in enumerate(sorted({c.df}["{d.series}"]'
               f'.unique()))}}\n')
        lines.append(f'{{f}}["series_code"] = {{f}}["{d.series}"].map(series_codes)')
        feats = ["series_code"] + feats
    c.fe_lines = lines
    body = pre + _fe_lines(c, lines, c.df) + "\n" + _ts_finish(c, c.df, feats, None)
    return {"features": [code(body, "fe")]}


@variant("feature_engineering", "fe_ts_unshifted_rolling", 1, paths=("ml",), cite=("fe",),
         marker=lambda c: "s.rolling(" if c.d.series else f"[{c.T}].rolling(",
         why="{C_fe} compute{s_fe} a rolling mean of {target} that includes the current "
             "{freq_word}: the feature contains the very value being predicted (and would not "
             "be known {H} {freq_word}s ahead), so the backtest error is far too optimistic.")
def fe_ts_unshifted(c: Ctx) -> Slots:
    d = c.d
    r = _roll(d)
    src = (f'{{f}}.groupby("{d.series}")["{d.target}"]' if d.series else f'{{f}}["{d.target}"]')
    roll = (f'{{f}}["roll_mean_{r}"] = {src}.transform(lambda s: s.rolling({r}).mean())'
            if d.series else f'{{f}}["roll_mean_{r}"] = {src}.rolling({r}).mean()')
    cal, cal_cols = _calendar(c, "{f}")
    lines = [f"for lag in {d.lags}:", f'    {{f}}[f"lag_{{lag}}"] = {src}.shift(lag)', roll] + cal
    c.fe_lines = lines
    lag_cols = [f"lag_{x}" for x in d.lags]
    feats = lag_cols + [f"roll_mean_{r}"] + cal_cols + d.exog
    body = _fe_lines(c, lines, c.df) + "\n" + _ts_finish(c, c.df, feats, qlist(lag_cols))
    c.lag_cols = lag_cols
    return {"features": [code(body, "fe")]}


@variant("feature_engineering", "fe_ts_short_lags", 1, paths=("ml",), cite=("fe",),
         marker=lambda c: f"LAGS = [1, 2, {naive_lag(c.d)}]", ok=lambda c: c.fam.nan,
         why="{C_fe} use{s_fe} lags of 1 and 2 {freq_word}s for a {H}-{freq_word}-ahead "
             "forecast: when the forecast is made these values do not exist yet for all but the "
             "first steps, so the backtest (which sees the true recent values) overstates "
             "accuracy and the future rows get missing lags.")
def fe_ts_short(c: Ctx) -> Slots:
    d = c.d
    s = naive_lag(d)
    g = (f'frame.groupby("{d.series}")["{d.target}"]' if d.series else f'frame["{d.target}"]')
    cal, cal_cols = _calendar(c, "frame")
    body = f"LAGS = [1, 2, {s}]\n\n\ndef make_features(frame):\n    frame = frame.copy()\n"
    body += f"    g = {g}\n    for lag in LAGS:\n        frame[f\"lag_{{lag}}\"] = g.shift(lag)\n"
    body += ind("\n".join(cal)) + "\n    return frame\n\n\n"
    body += f"full = make_features({c.df})\n"
    lag_cols = ["lag_1", "lag_2", f"lag_{s}"]
    body += _ts_finish(c, "full", lag_cols + cal_cols + d.exog, qlist(lag_cols))
    c.fe_func = "make_features"
    c.lag_cols = lag_cols
    return {"features": [code(body, "fe")]}


@variant("feature_engineering", "fe_na_univariate", NA, paths=("stats",), cite=("train",),
         marker=lambda c: c.fam.cls + "(",
         why="The forecast in {c_train} is a univariate {model} of the {target} series itself; "
             "by design there are no engineered features to judge.")
def fe_na(c: Ctx) -> Slots:
    return {}


# --------------------------------------------------------------------------------------------
# Model training
# --------------------------------------------------------------------------------------------


def _grid(c: Ctx, prefix: str) -> str:
    items = [f'"{prefix}{k}": {v}' for k, v in c.fam.grid.items()]
    return "{\n    " + ",\n    ".join(items) + ",\n}"


def _imbalance_note(c: Ctx) -> str:
    if c.cls and c.d.pos_rate <= 0.15:
        return f", and the {c.d.pos_rate:.0%} positive rate is not addressed"
    return ""


def _groups_kw(c: Ctx) -> str:
    return ", groups=groups_train" if c.d.group_col and c.path == "tab" else ""


def _tab_ok(c: Ctx) -> bool:
    return c.path == "tab"


@variant("model_training", "train_grid_search_cv", 3, paths=("tab", "ml"), cite=("split", "train"),
         marker="GridSearchCV(",
         why=lambda c: (
             "{C_split} " + split_desc(c) + "; {c_train} tune{s_train} {model} with GridSearchCV "
             "and "
             + ("TimeSeriesSplit" if c.path == "ml" or c.d.time_split else
                "GroupKFold by " + c.d.group_col if c.d.group_col else "5-fold CV")
             + " on the training rows only" + (
                 " with class weights for the rare positive class" if balance_arg(c) else "")
             + (", compare{s_train} the tuned model with a dummy baseline under the same CV"
                if c.path == "tab" else "") + ", and leaves the test set for one final check."))
def train_grid(c: Ctx) -> Slots:
    cv, cv_imps, _ = cv_object(c)
    if c.path == "ml":
        cv = f"TimeSeriesSplit(n_splits=4, gap={c.d.horizon})"
    pipe, prefix = pipeline_expr(c, c.est(balance_arg(c)))
    sc = scoring(c)
    g = _groups_kw(c)
    cells = [code(f"""
        pipe = {pipe}
        cv = {cv}
        param_grid = {_grid(c, prefix)}
        search = GridSearchCV(pipe, param_grid, scoring="{sc}", cv=cv, n_jobs=-1)
        search.fit({c.Xtr}, {c.ytr}{g})
        {c.model} = search.best_estimator_
        print(search.best_params_, round(search.best_score_, 4))
        """, "train", imports=["from sklearn.model_selection import GridSearchCV"] + cv_imps
                  + pipeline_imports(c))]
    if c.path == "tab":
        dummy = ('DummyClassifier(strategy="prior")' if c.cls else
                 'DummyRegressor(strategy="median")')
        mod = "DummyClassifier" if c.cls else "DummyRegressor"
        cells.append(code(f"""
            baseline = cross_val_score({dummy}, {c.Xtr}, {c.ytr}, scoring="{sc}", cv=cv{g})
            print("dummy baseline CV:", baseline.mean().round(4),
                  "| tuned model CV:", round(search.best_score_, 4))
            """, "train", imports=[f"from sklearn.dummy import {mod}",
                                   "from sklearn.model_selection import cross_val_score"]))
    c.params_expr = "search.best_params_"
    c.search_var = "search"
    return {"split": split_cells(c), "train": cells}


@variant("model_training", "train_random_search_cv", 3, paths=("tab", "ml"),
         cite=("split", "train"), marker="RandomizedSearchCV(",
         why=lambda c: (
             "{C_split} " + split_desc(c) + "; {c_train} run{s_train} a RandomizedSearchCV over "
             "{model} hyper-parameters with "
             + ("TimeSeriesSplit" if c.path == "ml" or c.d.time_split else
                "GroupKFold" if c.d.group_col else "cross-validation")
             + " inside the training data" + (
                 ", handle{s_train} the class imbalance with class weights" if balance_arg(c)
                 else "")
             + (" and report{s_train} the train/validation gap and a naive baseline"
                if c.path == "tab"
                else "") + "; the test rows are not touched until evaluation."))
def train_random(c: Ctx) -> Slots:
    cv, cv_imps, _ = cv_object(c)
    if c.path == "ml":
        cv = f"TimeSeriesSplit(n_splits=4, gap={c.d.horizon})"
    pipe, prefix = pipeline_expr(c, c.est(balance_arg(c)))
    sc = scoring(c)
    g = _groups_kw(c)
    body = ("search = RandomizedSearchCV(\n" + ind(pipe) + ",\n    param_distributions="
            + ind(_grid(c, prefix)).strip() + ",\n"
            f'    n_iter=8, scoring="{sc}", cv={cv}, random_state={c.seed},\n'
            "    return_train_score=True, n_jobs=-1,\n)\n"
            f"search.fit({c.Xtr}, {c.ytr}{g})\n{c.model} = search.best_estimator_")
    cells = [code(body, "train",
                  imports=["from sklearn.model_selection import RandomizedSearchCV"] + cv_imps
                  + pipeline_imports(c))]
    if c.path == "tab":
        naive = (f"{c.ytr}.mean()" if c.cls else f"{c.ytr}.median()")
        metric = ("average_precision_score" if sc == "average_precision" else "roc_auc_score"
                  if c.cls else "mean_absolute_error")
        if c.cls and sc == "average_precision":
            naive_line = f'print("PR-AUC of a prior-only baseline:", round({naive}, 4))'
        elif c.cls:
            naive_line = 'print("ROC AUC of a random ranking: 0.5")'
        else:
            naive_line = (f'print("median baseline MAE:", round({metric}({c.ytr}, '
                          f'np.full(len({c.ytr}), {naive})), 2))')
        cells.append(code(f"""
            cv_table = pd.DataFrame(search.cv_results_)[
                ["params", "mean_train_score", "mean_test_score"]].sort_values(
                "mean_test_score", ascending=False)
            print(cv_table.head(3).to_string())
            {naive_line}
            """, "train", imports=[f"from sklearn.metrics import {metric}"] if not c.cls else []))
    c.params_expr = "search.best_params_"
    c.search_var = "search"
    return {"split": split_cells(c), "train": cells}


def _val_split(c: Ctx) -> tuple[str, list[str]]:
    if c.d.time_split:
        return (f"n_fit = int(len({c.Xtr}) * 0.85)  # training rows are in time order\n"
                f"X_fit, X_val = {c.Xtr}.iloc[:n_fit], {c.Xtr}.iloc[n_fit:]\n"
                f"y_fit, y_val = {c.ytr}.iloc[:n_fit], {c.ytr}.iloc[n_fit:]", [])
    if c.d.group_col:
        return (f"inner = GroupShuffleSplit(n_splits=1, test_size=0.15, random_state={c.seed})\n"
                f"fit_idx, val_idx = next(inner.split({c.Xtr}, {c.ytr}, groups=groups_train))\n"
                f"X_fit, X_val = {c.Xtr}.iloc[fit_idx], {c.Xtr}.iloc[val_idx]\n"
                f"y_fit, y_val = {c.ytr}.iloc[fit_idx], {c.ytr}.iloc[val_idx]", [])
    strat = f", stratify={c.ytr}" if c.cls else ""
    return (f"X_fit, X_val, y_fit, y_val = train_test_split(\n    {c.Xtr}, {c.ytr}, "
            f"test_size=0.15{strat}, random_state={c.seed})",
            ["from sklearn.model_selection import train_test_split"])


def _booster(c: Ctx, eval_x: str, eval_y: str, fit_x: str, fit_y: str) -> tuple[str, list[str]]:
    """Code fitting an xgboost / lightgbm model with early stopping on (eval_x, eval_y)."""
    bal = balance_arg(c).replace(c.ytr, fit_y)
    extra = ", ".join(x for x in [bal] if x)
    if c.fam.key.startswith("xgb"):
        em = '"aucpr"' if c.cls else '"mae"'
        args = (f"n_estimators=3000, learning_rate=0.05, max_depth=6, early_stopping_rounds=50, "
                f"eval_metric={em}, tree_method=\"hist\", random_state={c.seed}")
        args += f", {extra}" if extra else ""
        fit = (f"booster.fit({fit_x}, {fit_y}, eval_set=[({eval_x}, {eval_y})], verbose=False)\n"
               'print("best iteration:", booster.best_iteration)')
        return f"booster = {wrap_call(f'{c.fam.cls}({args})', 0, 10)}\n{fit}", []
    args = f"n_estimators=3000, learning_rate=0.05, verbose=-1, random_state={c.seed}"
    args += f", {extra}" if extra else ""
    fit = (f"booster.fit({fit_x}, {fit_y}, eval_set=[({eval_x}, {eval_y})],\n"
           "            callbacks=[lgb.early_stopping(50, verbose=False)])\n"
           'print("best iteration:", booster.best_iteration_)')
    call = wrap_call(f"{c.fam.cls}({args})", 0, 10)
    return f"booster = {call}\n{fit}", ["import lightgbm as lgb"]


def _prep_lines(c: Ctx, fit_x: str, fit_y: str, other_x: str,
                names: tuple[str, str] = ("Xt_fit", "Xt_val")) -> tuple[str, str, str, str]:
    """Fit the preprocessing on (fit_x, fit_y) and transform other_x.

    Returns (code, fitted preprocessing name or "", transformed fit_x, transformed other_x).
    fit_transform matters: a TargetEncoder only cross-fits inside fit_transform.
    """
    if c.prep:
        name, make = c.prep, ""
    elif c.pipe_imputer:
        name, make = "imputer", f"imputer = {c.pipe_imputer}\n"
    else:
        return "", "", fit_x, other_x
    a, b = names
    return (f"{make}{a} = {name}.fit_transform({fit_x}, {fit_y})\n"
            f"{b} = {name}.transform({other_x})", name, a, b)


@variant("model_training", "train_early_stopping_val", 3, paths=("tab",), cite=("split", "train"),
         marker=lambda c: "early_stopping_rounds=50" if c.fam.key.startswith("xgb")
         else "lgb.early_stopping(50",
         ok=lambda c: c.fam.boosting and c.path == "tab",
         why=lambda c: (
             "{C_split} " + split_desc(c) + "; {c_train} carve{s_train} a validation set out of "
             "the "
             "training rows, choose{s_train} the number of boosting rounds by early stopping on it"
             + (", weight{s_train} the rare positive class" if balance_arg(c) else "")
             + " and compare{s_train} with a prior/median baseline, so the test set is used only "
               "for the final estimate."))
def train_es_val(c: Ctx) -> Slots:
    vs, _ = _val_split(c)
    prep_code, prep, fx, vx = _prep_lines(c, "X_fit", "y_fit", "X_val")
    boost, _ = _booster(c, vx, "y_val", fx, "y_fit")
    step = "impute" if prep == "imputer" else "prep"
    wrap = (f'{c.model} = Pipeline([("{step}", {prep}), ("model", booster)])' if prep else
            f"{c.model} = booster")
    base = ('print("validation PR-AUC of the prior:", round(y_val.mean(), 4))' if c.cls else
            'print("validation MAE of the training median:", '
            "round((y_val - y_fit.median()).abs().mean(), 2))")
    body = "\n".join(x for x in [vs, prep_code, boost, base, wrap] if x)
    c.params_expr = ('{"n_estimators": booster.best_iteration' + (
        "" if c.fam.key.startswith("xgb") else "_") + ', "learning_rate": 0.05}')
    return {"split": split_cells(c), "train": [code(body, "train")]}


@variant("model_training", "train_default_fit", 2, paths=("tab", "ml"), cite=("split", "train"),
         marker=lambda c: f"{c.model}.fit({c.Xtr}, {c.ytr})",
         why=lambda c: (
             "{C_split} " + split_desc(c) + " and {c_train} fit{s_train} {model} on the training "
             "rows "
             "only, which is sound, but with default hyper-parameters: no cross-validation "
             "and no tuning{baseline_note}" + _imbalance_note(c) + "."))
def train_default(c: Ctx) -> Slots:
    pipe, prefix = pipeline_expr(c, c.est())
    c.params_expr = default_params(c, c.model, prefix)
    return {"split": split_cells(c), "train": [code(f"""
        {c.model} = {pipe}
        {c.model}.fit({c.Xtr}, {c.ytr})
        """, "train", imports=pipeline_imports(c))]}


@variant("model_training", "train_cv_no_tuning", 2, paths=("tab",), cite=("split", "train"),
         marker="cross_val_score(",
         why=lambda c: (
             "{C_split} " + split_desc(c) + "; {c_train} report{s_train} a 5-fold cross-validation "
             "score for one fixed {model} configuration and then fit{s_train} it on the "
             "training rows: "
             "no leakage, but nothing is tuned{baseline_note}" + _imbalance_note(c)
             + "."))
def train_cv_only(c: Ctx) -> Slots:
    pipe, prefix = pipeline_expr(c, c.est())
    c.params_expr = default_params(c, c.model, prefix)
    cv, cv_imps, _ = cv_object(c)
    g = _groups_kw(c)
    return {"split": split_cells(c), "train": [code(f"""
        {c.model} = {pipe}
        cv = {cv}
        scores = cross_val_score({c.model}, {c.Xtr}, {c.ytr}, cv=cv, scoring="{scoring(c)}"{g})
        print(f"CV {scoring(c)}: {{scores.mean():.4f}} +/- {{scores.std():.4f}}")
        {c.model}.fit({c.Xtr}, {c.ytr})
        """, "train", imports=["from sklearn.model_selection import cross_val_score"] + cv_imps
                        + pipeline_imports(c))]}


@variant("model_training", "train_tuned_on_test", 1, paths=("tab", "ml"), cite=("train",),
         marker=lambda c: (f"roc_auc_score({c.yte}, candidate.predict_proba({c.Xte})" if c.cls
                           else f"mean_absolute_error({c.yte}, candidate.predict({c.Xte}))"),
         why=lambda c: (
             "{C_train} tr{ies_train} several values of " + list(c.fam.grid)[0]
             + " and keep{s_train} the one "
             "with the best score on the test split, then report{s_train} that same test score: "
             "the "
             "test set was used for model selection, so the reported number is optimistically "
             "biased and no untouched hold-out is left."))
def train_on_test(c: Ctx) -> Slots:
    param, values = next(iter(c.fam.grid.items()))
    pipe, _ = pipeline_expr(c, c.est(f"{param}=value"))
    if c.cls:
        score = f"roc_auc_score({c.yte}, candidate.predict_proba({c.Xte})[:, 1])"
        imps = ["from sklearn.metrics import roc_auc_score"]
        label = "test ROC AUC"
    else:
        score = f"-mean_absolute_error({c.yte}, candidate.predict({c.Xte}))"
        imps = ["from sklearn.metrics import mean_absolute_error"]
        label = "test -MAE"
    body = f"best_score, best_value = None, None\nfor value in {values}:\n"
    body += ind(f"candidate = {pipe}") + "\n"
    body += f"    candidate.fit({c.Xtr}, {c.ytr})\n    score = {score}\n"
    body += "    if best_score is None or score > best_score:\n"
    body += f"        best_score, best_value, {c.model} = score, value, candidate\n"
    body += f'print(f"best {param}={{best_value}}: {label} {{best_score:.4f}}")'
    c.params_expr = f'{{"{param}": best_value}}'
    return {"split": split_cells(c),
            "train": [code(body, "train", imports=imps + pipeline_imports(c))]}


@variant("model_training", "train_early_stopping_on_test", 1, paths=("tab",), cite=("train",),
         marker="eval_set=[(", ok=lambda c: c.fam.boosting and c.path == "tab",
         why="{C_train} use{s_train} the test split as the early-stopping eval_set, so the "
             "number of "
             "boosting rounds is chosen on the very rows the model is later evaluated on; the "
             "training loop runs fine, but the test score is no longer an honest estimate.")
def train_es_test(c: Ctx) -> Slots:
    prep_code, prep, fx, ex = _prep_lines(c, c.Xtr, c.ytr, c.Xte, ("Xt_train", "Xt_test"))
    step = "impute" if prep == "imputer" else "prep"
    wrap = (f'{c.model} = Pipeline([("{step}", {prep}), ("model", booster)])' if prep else
            f"{c.model} = booster")
    boost, _ = _booster(c, ex, c.yte, fx, c.ytr)
    c.params_expr = ('{"n_estimators": booster.best_iteration' + (
        "" if c.fam.key.startswith("xgb") else "_") + "}")
    body = "\n".join(x for x in [prep_code, boost, wrap] if x)
    return {"split": split_cells(c), "train": [code(body, "train")]}


@variant("model_training", "train_fit_on_all_rows", 1, paths=("tab",), cite=("train", "eval"),
         marker=lambda c: f"pd.concat([{c.Xtr}, {c.Xte}])",
         ok=lambda c: c.variants.get("data_imputation") not in LEVEL3_PIPE_IMPUTERS
         and c.variants.get("feature_engineering") != "fe_domain_target_encoder",
         why="{C_train} fit{s_train} the final model on the training and test rows together "
             "(\"use all "
             "the data\"), and {c_eval} then evaluate{s_eval} it on the same test rows it was "
             "trained "
             "on: the reported performance is effectively a training score.")
def train_all_rows(c: Ctx) -> Slots:
    pipe, prefix = pipeline_expr(c, c.est())
    c.params_expr = default_params(c, c.model, prefix)
    return {"split": split_cells(c), "train": [code(f"""
        # use all labelled rows for the final model
        X_all = pd.concat([{c.Xtr}, {c.Xte}])
        y_all = pd.concat([{c.ytr}, {c.yte}])
        {c.model} = {pipe}
        {c.model}.fit(X_all, y_all)
        """, "train", imports=pipeline_imports(c))]}


# ---- forecasting with features -------------------------------------------------------------


@variant("model_training", "train_ts_validation_window", 3, paths=("ml",),
         cite=("split", "train"), marker="val_start",
         why="{C_split} splits by date; {c_train} hold{s_train} out the last weeks of the training "
             "window as a validation period, pick{s_train} the hyper-parameter there, "
             "refit{s_train} on the "
             "full training window and keep{s_train} the test period for the final check against a "
             "seasonal-naive baseline.")
def train_ts_val(c: Ctx) -> Slots:
    d = c.d
    param, values = next(iter(c.fam.grid.items()))
    span = {"W-MON": "pd.Timedelta(weeks=8)", "h": "pd.Timedelta(days=7)",
            "D": "pd.Timedelta(days=28)"}[d.freq]
    pipe, _ = pipeline_expr(c, c.est(f"{param}=value"))
    final, _ = pipeline_expr(c, c.est(f"{param}=best_value"))
    body = (f'val_start = {c.train_df}["{d.date}"].max() - {span}\n'
            f'fit_part = {c.train_df}[{c.train_df}["{d.date}"] <= val_start]\n'
            f'val_part = {c.train_df}[{c.train_df}["{d.date}"] > val_start]\n'
            "val_mae = {}\n"
            f"for value in {values}:\n" + ind(f"candidate = {pipe}") + "\n"
            f"    candidate.fit(fit_part[{c.FEATS}], fit_part[{c.T}])\n"
            f"    val_mae[value] = mean_absolute_error(val_part[{c.T}], "
            f"candidate.predict(val_part[{c.FEATS}]))\n"
            "best_value = min(val_mae, key=val_mae.get)\n"
            f'print("validation MAE:", val_mae, "-> {param} =", best_value)\n'
            f"{c.model} = {final}\n{c.model}.fit({c.Xtr}, {c.ytr})")
    c.params_expr = f'{{"{param}": best_value}}'
    return {"split": split_cells(c), "train": [code(
        body, "train", imports=["from sklearn.metrics import mean_absolute_error"]
        + pipeline_imports(c))]}


@variant("model_training", "train_ts_random_split", 1, paths=("ml",), cite=("split",),
         marker="shuffle=True",
         why="{C_split} splits the {adj} rows at random (shuffle=True) instead of by "
             "date: the model is trained on {freq_word}s that come after the ones it is tested "
             "on and on neighbours of every test {freq_word}, so the test error says little "
             "about forecasting the future.")
def train_ts_random(c: Ctx) -> Slots:
    pipe, prefix = pipeline_expr(c, c.est())
    c.params_expr = default_params(c, c.model, prefix)
    split = code(f"""
        {c.Xtr}, {c.Xte}, {c.ytr}, {c.yte} = train_test_split(
            {c.feat}[{c.FEATS}], {c.feat}[{c.T}], test_size=0.2, shuffle=True,
            random_state={c.seed})
        {c.test_df} = {c.feat}.loc[{c.Xte}.index]
        """, "split", imports=["from sklearn.model_selection import train_test_split"])
    return {"split": [split], "train": [code(f"""
        {c.model} = {pipe}
        {c.model}.fit({c.Xtr}, {c.ytr})
        """, "train", imports=pipeline_imports(c))]}


# ---- statistical forecasting ---------------------------------------------------------------


def _sarimax_seasonal(d: Domain) -> str:
    return f"(1, 0, 1, {d.season})"


@variant("model_training", "train_sarimax_aic", 3, paths=("stats",), cite=("split", "train"),
         marker="SARIMAX(", ok=lambda c: c.fam.key == "sarimax",
         why="{C_split} holds out the most recent {freq_word}s; {c_train} compare{s_train} several "
             "SARIMAX orders by AIC on the training window only, keep{s_train} the best and "
             "forecast{s_train} "
             "the whole hold-out horizon from the end of training, so the test period is never "
             "used for selection.")
def train_sarimax(c: Ctx) -> Slots:
    d = c.d
    body = f"""
        candidates = [(1, 0, 1), (2, 0, 1), (1, 1, 1), (2, 1, 2)]
        fits = {{}}
        for order in candidates:
            fits[order] = SARIMAX({c.ytr}, order=order, seasonal_order={_sarimax_seasonal(d)}).fit(
                disp=False)
        best_order = min(fits, key=lambda o: fits[o].aic)
        res = fits[best_order]
        forecast = res.forecast(steps=n_test)
        print("best order:", best_order, "AIC:", round(res.aic, 1))
        """
    c.params_expr = f'{{"order": str(best_order), "seasonal_order": "{_sarimax_seasonal(d)}"}}'
    return {"split": split_cells(c), "train": [code(body, "train", imports=[c.fam.imp])]}


@variant("model_training", "train_ets_aicc", 3, paths=("stats",), cite=("split", "train"),
         marker="ExponentialSmoothing(", ok=lambda c: c.fam.key == "ets",
         why="{C_split} holds out the most recent {freq_word}s; {c_train} fit{s_train} three "
             "Holt-Winters configurations (trend / damped trend / none, additive seasonality of "
             "period {S0}) on the training window and keep{s_train} the one with the lowest "
             "AICc, so "
             "the choice never looks at the test period.")
def train_ets(c: Ctx) -> Slots:
    d = c.d
    body = f"""
        configs = [
            dict(trend="add", damped_trend=True, seasonal="add"),
            dict(trend="add", damped_trend=False, seasonal="add"),
            dict(trend=None, seasonal="add"),
        ]
        fits = [ExponentialSmoothing({c.ytr}, seasonal_periods={d.season}, **cfg).fit()
                for cfg in configs]
        best = min(range(len(fits)), key=lambda i: fits[i].aicc)
        res, best_cfg = fits[best], configs[best]
        forecast = res.forecast(n_test)
        print(best_cfg, round(res.aicc, 1))
        """
    c.params_expr = "{k: str(v) for k, v in best_cfg.items()}"
    return {"split": split_cells(c), "train": [code(body, "train", imports=[c.fam.imp])]}


@variant("model_training", "train_stats_fixed_config", 2, paths=("stats",),
         cite=("split", "train"), marker=lambda c: c.fam.cls + f"({c.ytr}",
         why="{C_split} holds out the most recent {freq_word}s and {c_train} fit{s_train} one "
             "fixed "
             "{model} configuration on the training window only: no leakage, but the "
             "specification is never compared with alternatives{baseline_note}.")
def train_stats_fixed(c: Ctx) -> Slots:
    d = c.d
    if c.fam.key == "sarimax":
        body = (f"res = SARIMAX({c.ytr}, order=(1, 1, 1), seasonal_order=(0, 1, 1, {d.season}))"
                ".fit(disp=False)\nprint(res.summary().tables[1])\n"
                "forecast = res.forecast(steps=n_test)")
        c.params_expr = f'{{"order": "(1, 1, 1)", "seasonal_order": "(0, 1, 1, {d.season})"}}'
    else:
        body = (f'res = ExponentialSmoothing({c.ytr}, trend="add", seasonal="add", '
                f"seasonal_periods={d.season}).fit()\nforecast = res.forecast(n_test)")
        c.params_expr = '{"trend": "add", "seasonal": "add"}'
    return {"split": split_cells(c), "train": [code(body, "train", imports=[c.fam.imp])]}


@variant("model_training", "train_stats_full_series", 1, paths=("stats",), cite=("train",),
         marker=lambda c: f"{c.fam.cls}({c.ser},",
         why="{C_train} fit{s_train} the model on the full series, hold-out period included, "
             "and then "
             "take{s_train} in-sample predictions for the hold-out dates as the \"forecast\": "
             "the model "
             "has already seen every test value, so the evaluation measures fit, not "
             "forecasting.")
def train_stats_full(c: Ctx) -> Slots:
    d = c.d
    if c.fam.key == "sarimax":
        fit = (f"res = SARIMAX({c.ser}, order=(1, 1, 1), seasonal_order=(1, 0, 1, {d.season}))"
               ".fit(disp=False)")
        c.params_expr = '{"order": "(1, 1, 1)"}'
    else:
        fit = (f'res = ExponentialSmoothing({c.ser}, trend="add", seasonal="add", '
               f"seasonal_periods={d.season}).fit()")
        c.params_expr = '{"trend": "add", "seasonal": "add"}'
    body = fit + f"\nforecast = res.predict(start={c.yte}.index[0], end={c.yte}.index[-1])"
    return {"split": split_cells(c), "train": [code(body, "train", imports=[c.fam.imp])]}


@variant("model_training", "train_stats_select_on_test", 1, paths=("stats",), cite=("train",),
         marker=lambda c: f"mean_absolute_error({c.yte}",
         why="{C_train} fit{s_train} several configurations and keep{s_train} the one with the "
             "lowest MAE on "
             "the hold-out period, then report{s_train} that MAE: the test window chose the "
             "model, so "
             "the reported error is optimistic and nothing independent is left to check it.")
def train_stats_on_test(c: Ctx) -> Slots:
    d = c.d
    if c.fam.key == "sarimax":
        loop = (f"for order in [(1, 0, 1), (2, 0, 1), (1, 1, 1), (2, 1, 2)]:\n"
                f"    fit = SARIMAX({c.ytr}, order=order, seasonal_order=(1, 0, 1, {d.season}))"
                ".fit(disp=False)\n    key = order\n")
    else:
        loop = (f'for trend in ["add", None]:\n    fit = ExponentialSmoothing({c.ytr}, '
                f'trend=trend, seasonal="add", seasonal_periods={d.season}).fit()\n'
                "    key = trend\n")
    body = ("best_mae, best_key = float(\"inf\"), None\n" + loop
            + "    fc = fit.forecast(n_test)\n"
            f"    mae = mean_absolute_error({c.yte}, fc.loc[{c.yte}.index])\n"
            "    if mae < best_mae:\n        best_mae, best_key, res, forecast = mae, key, fit, "
            "fc\n"
            'print("selected", best_key, "test MAE", round(best_mae, 1))')
    c.params_expr = '{"config": str(best_key)}'
    return {"split": split_cells(c), "train": [code(
        body, "train", imports=[c.fam.imp, "from sklearn.metrics import mean_absolute_error"])]}


# --------------------------------------------------------------------------------------------
# Metrics & evaluation
# --------------------------------------------------------------------------------------------


def _is_cls(c: Ctx) -> bool:
    return c.path == "tab" and c.cls


def _is_reg(c: Ctx) -> bool:
    return c.path == "tab" and not c.cls


def _cv_for_oof(c: Ctx) -> tuple[str, str, list[str]]:
    if c.d.group_col:
        return "GroupKFold(n_splits=5)", ", groups=groups_train", [
            "from sklearn.model_selection import GroupKFold"]
    if c.d.time_split:
        return "5", "", []
    return (f"StratifiedKFold(n_splits=5, shuffle=True, random_state={c.seed})", "",
            ["from sklearn.model_selection import StratifiedKFold"])


@variant("metrics_evaluation", "ev_cls_ranking_threshold", 3, paths=("tab",), cite=("eval",),
         marker="average_precision_score(", ok=_is_cls,
         why="{C_eval} report{s_eval} ROC AUC, PR-AUC (next to the {rate} positive rate that a "
             "random ranking would get) and the Brier score on the test split, pick{s_eval} the "
             "decision threshold from out-of-fold predictions on the training rows rather than "
             "on the test set, and show{s_eval} precision/recall and the confusion matrix at that "
             "threshold.")
def ev_cls_threshold(c: Ctx) -> Slots:
    cv, g, imps = _cv_for_oof(c)
    c.metrics_dict = "test_metrics"
    c.threshold = "threshold"
    return {"evaluate": [
        code(f"""
            proba = {c.model}.predict_proba({c.Xte})[:, 1]
            test_metrics = {{
                "roc_auc": roc_auc_score({c.yte}, proba),
                "pr_auc": average_precision_score({c.yte}, proba),
                "brier": brier_score_loss({c.yte}, proba),
            }}
            print({{k: round(v, 4) for k, v in test_metrics.items()}})
            print("PR-AUC of a random ranking (positive rate):", round({c.yte}.mean(), 4))
            """, "eval", imports=["from sklearn.metrics import average_precision_score, "
                                  "brier_score_loss, roc_auc_score"]),
        code(f"""
            # threshold chosen on out-of-fold training predictions, not on the test set
            oof_cv = {cv}
            oof = cross_val_predict({c.model}, {c.Xtr}, {c.ytr}, cv=oof_cv,
                                    method="predict_proba"{g})[:, 1]
            prec, rec, thr = precision_recall_curve({c.ytr}, oof)
            f1 = 2 * prec * rec / np.clip(prec + rec, 1e-9, None)
            threshold = float(thr[np.argmax(f1[:-1])])
            pred = (proba >= threshold).astype(int)
            print(f"threshold={{threshold:.3f}}")
            print(classification_report({c.yte}, pred, digits=3))
            print(confusion_matrix({c.yte}, pred))
            test_metrics["recall_at_threshold"] = recall_score({c.yte}, pred)
            """, "eval", imports=imps + [
                "from sklearn.model_selection import cross_val_predict",
                "from sklearn.metrics import classification_report, confusion_matrix, "
                "precision_recall_curve, recall_score", "import numpy as np"])]}


@variant("metrics_evaluation", "ev_cls_topk_segments", 3, paths=("tab",), cite=("eval",),
         marker="precision_at_", ok=_is_cls,
         why="{C_eval} compare{s_eval} the model with a prior-only dummy on ROC AUC and PR-AUC, "
             "report{s_eval} precision and recall in the top 5% of scores (the capacity the "
             "team can "
             "act on) and break{s_eval} the AUC down by {seg} on the test split, so the numbers "
             "fit the "
             "{rate} positive rate and the way the scores will be used.")
def ev_cls_topk(c: Ctx) -> Slots:
    seg = c.d.cat[0]
    c.metrics_dict = "test_metrics"
    return {"evaluate": [code(f"""
        proba = {c.model}.predict_proba({c.Xte})[:, 1]
        dummy = DummyClassifier(strategy="prior").fit({c.Xtr}, {c.ytr})
        dummy_proba = dummy.predict_proba({c.Xte})[:, 1]
        k = max(1, int(0.05 * len(proba)))
        top = np.argsort(-proba)[:k]
        test_metrics = {{
            "roc_auc": roc_auc_score({c.yte}, proba),
            "pr_auc": average_precision_score({c.yte}, proba),
            "precision_at_5pct": {c.yte}.to_numpy()[top].mean(),
            "recall_at_5pct": {c.yte}.to_numpy()[top].sum() / {c.yte}.sum(),
        }}
        print(pd.Series(test_metrics).round(4))
        print("dummy PR-AUC:", round(average_precision_score({c.yte}, dummy_proba), 4))
        """, "eval", imports=["from sklearn.dummy import DummyClassifier",
                              "from sklearn.metrics import average_precision_score, roc_auc_score",
                              "import numpy as np"]),
        code(f"""
            segments = pd.DataFrame({{"{seg}": {c.df}.loc[{c.Xte}.index, "{seg}"],
                                     "y": {c.yte}, "p": proba}})
            by_segment = segments.groupby("{seg}").apply(
                lambda s: roc_auc_score(s["y"], s["p"]) if s["y"].nunique() == 2 else np.nan)
            by_segment.sort_values().head(10)
            """, "eval")]}


@variant("metrics_evaluation", "ev_cls_accuracy_f1", 2, paths=("tab",), cite=("eval",),
         marker="f1_score(", ok=_is_cls,
         why="{C_eval} report{s_eval} accuracy, F1 and a confusion matrix on the test split at "
             "the default 0.5 cut-off: held-out and not wrong, but there is no ranking metric "
             "(ROC/PR-AUC), no baseline and no reasoning about the threshold for a positive "
             "rate of {rate}.")
def ev_cls_acc_f1(c: Ctx) -> Slots:
    c.metric_vars = {"accuracy": "acc", "f1": "f1"}
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte})
        acc = accuracy_score({c.yte}, pred)
        f1 = f1_score({c.yte}, pred)
        print(f"accuracy={{acc:.3f}}  f1={{f1:.3f}}")
        print(confusion_matrix({c.yte}, pred))
        """, "eval", imports=["from sklearn.metrics import accuracy_score, confusion_matrix, "
                              "f1_score"])]}


@variant("metrics_evaluation", "ev_cls_auc_only", 2, paths=("tab",), cite=("eval",),
         marker='print("test ROC AUC', ok=_is_cls,
         why="{C_eval} compute{s_eval} a single ROC AUC on the test split: a sensible held-out "
             "ranking metric, but with a positive rate of {rate} it says little about precision, "
             "there is no baseline, no threshold and no error analysis.")
def ev_cls_auc(c: Ctx) -> Slots:
    c.metric_vars = {"roc_auc": "auc"}
    return {"evaluate": [code(f"""
        auc = roc_auc_score({c.yte}, {c.model}.predict_proba({c.Xte})[:, 1])
        print("test ROC AUC:", round(auc, 4))
        """, "eval", imports=["from sklearn.metrics import roc_auc_score"])]}


@variant("metrics_evaluation", "ev_cls_accuracy_rare_class", 1, paths=("tab",), cite=("eval",),
         marker="accuracy_score(", ok=lambda c: _is_cls(c) and c.d.pos_rate <= 0.12,
         why="{C_eval} judge{s_eval} the model by accuracy alone although only about {rate} of "
             "rows are positive: a model that never predicts {target} = 1 already scores about "
             "{acc_trivial}, so the reported accuracy says nothing about catching the rare "
             "class.")
def ev_cls_rare_acc(c: Ctx) -> Slots:
    c.metric_vars = {"accuracy": "acc"}
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte})
        acc = accuracy_score({c.yte}, pred)
        print(f"Test accuracy: {{acc:.2%}}")
        """, "eval", imports=["from sklearn.metrics import accuracy_score"])]}


@variant("metrics_evaluation", "ev_cls_training_rows", 1, paths=("tab",), cite=("eval",),
         marker=lambda c: f"predict_proba({c.Xtr})", ok=_is_cls,
         why="{C_eval} compute{s_eval} ROC AUC and accuracy on the training rows the model was "
             "fitted on and present{s_eval} them as the model's performance; the test split is "
             "never "
             "scored, so the numbers mostly measure memorisation.")
def ev_cls_train(c: Ctx) -> Slots:
    c.metric_vars = {"roc_auc": "train_auc", "accuracy": "train_acc"}
    return {"evaluate": [code(f"""
        train_auc = roc_auc_score({c.ytr}, {c.model}.predict_proba({c.Xtr})[:, 1])
        train_acc = accuracy_score({c.ytr}, {c.model}.predict({c.Xtr}))
        print(f"ROC AUC: {{train_auc:.3f}}, accuracy: {{train_acc:.3f}}")
        """, "eval", imports=["from sklearn.metrics import accuracy_score, roc_auc_score"])]}


# ---- regression ----------------------------------------------------------------------------


@variant("metrics_evaluation", "ev_reg_baseline_residuals", 3, paths=("tab",), cite=("eval",),
         marker="DummyRegressor(", ok=_is_reg,
         why="{C_eval} report{s_eval} MAE, RMSE and R² on the test split in {unit}, next to a "
             "median-predicting DummyRegressor, and look at the errors by segment ({seg}), so "
             "the size and the pattern of the errors are both visible.")
def ev_reg_full(c: Ctx) -> Slots:
    seg = c.d.cat[0]
    c.metrics_dict = "test_metrics"
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte})
        dummy = DummyRegressor(strategy="median").fit({c.Xtr}, {c.ytr})
        rows = {{}}
        for name, p in [("model", pred), ("median baseline", dummy.predict({c.Xte}))]:
            rows[name] = {{
                "mae": mean_absolute_error({c.yte}, p),
                "rmse": np.sqrt(mean_squared_error({c.yte}, p)),
                "r2": r2_score({c.yte}, p),
            }}
        test_metrics = rows["model"]
        pd.DataFrame(rows).T.round(3)
        """, "eval", imports=["from sklearn.dummy import DummyRegressor",
                              "from sklearn.metrics import mean_absolute_error, "
                              "mean_squared_error, r2_score", "import numpy as np"]),
        code(f"""
            residuals = pd.DataFrame({{"{seg}": {c.df}.loc[{c.Xte}.index, "{seg}"],
                                      "abs_error": ({c.yte} - pred).abs()}})
            residuals.groupby("{seg}")["abs_error"].agg(["mean", "size"]).sort_values(
                "mean", ascending=False).head(8)
            """, "eval")]}


@variant("metrics_evaluation", "ev_reg_report_function", 3, paths=("tab",), cite=("eval",),
         marker="def regression_report(", ok=_is_reg,
         why="{C_eval} define{s_eval} a regression_report() with MAE, RMSE, median absolute "
             "error and R², apply it to the model and to a training-median baseline on the "
             "test split, and plot predicted against actual {target} with the error by "
             "decile of the target.")
def ev_reg_func(c: Ctx) -> Slots:
    c.metrics_dict = "test_metrics"
    return {"evaluate": [code(f"""
        def regression_report(y_true, y_pred):
            return {{
                "mae": mean_absolute_error(y_true, y_pred),
                "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2))),
                "median_ae": median_absolute_error(y_true, y_pred),
                "r2": r2_score(y_true, y_pred),
            }}


        pred = {c.model}.predict({c.Xte})
        test_metrics = regression_report({c.yte}, pred)
        baseline = regression_report({c.yte}, np.full(len({c.yte}), {c.ytr}.median()))
        pd.DataFrame({{"model": test_metrics, "train-median baseline": baseline}}).round(3)
        """, "eval", imports=["from sklearn.metrics import mean_absolute_error, "
                              "median_absolute_error, r2_score", "import numpy as np"]),
        code(f"""
            fig, axes = plt.subplots(1, 2, figsize=(12, 4))
            axes[0].scatter({c.yte}, pred, s=4, alpha=0.3)
            axes[0].set_xlabel("actual"); axes[0].set_ylabel("predicted")
            decile = pd.qcut({c.yte}, 10, labels=False, duplicates="drop")
            (({c.yte} - pred).abs()).groupby(decile).mean().plot.bar(ax=axes[1], title="MAE by "
                                                                                       "decile")
            plt.tight_layout()
            """, "eval", imports=["import matplotlib.pyplot as plt"])]}


@variant("metrics_evaluation", "ev_reg_rmse_only", 2, paths=("tab",), cite=("eval",),
         marker="np.sqrt(mean_squared_error(", ok=_is_reg,
         why="{C_eval} report{s_eval} a single RMSE on the test split: held-out and in {unit}, "
             "but with no baseline to say whether it is good, no MAE or R², and no look at where "
             "the errors are.")
def ev_reg_rmse(c: Ctx) -> Slots:
    c.metric_vars = {"rmse": "rmse"}
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte})
        rmse = np.sqrt(mean_squared_error({c.yte}, pred))
        print(f"RMSE: {{rmse:,.2f}}")
        """, "eval", imports=["from sklearn.metrics import mean_squared_error",
                              "import numpy as np"])]}


@variant("metrics_evaluation", "ev_reg_r2_mae", 2, paths=("tab",), cite=("eval",),
         marker="r2_score(", ok=_is_reg,
         why="{C_eval} print{s_eval} MAE and R² on the test split: appropriate metrics on "
             "held-out data, but no baseline, no RMSE for the large errors that matter for "
             "{target}, and no error analysis.")
def ev_reg_r2(c: Ctx) -> Slots:
    c.metric_vars = {"mae": "mae", "r2": "r2"}
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte})
        mae, r2 = mean_absolute_error({c.yte}, pred), r2_score({c.yte}, pred)
        print("MAE", round(mae, 2), "R2", round(r2, 3))
        """, "eval", imports=["from sklearn.metrics import mean_absolute_error, r2_score"])]}


@variant("metrics_evaluation", "ev_reg_mape_with_zeros", 1, paths=("tab",), cite=("eval",),
         marker="mean_absolute_percentage_error(", ok=lambda c: _is_reg(c) and c.d.zeros,
         why="{C_eval} judge{s_eval} the model by MAPE although most rows have {target} = 0: "
             "the percentage error divides by zero there, so the number is dominated by "
             "meaningless huge values and says nothing about the money-weighted error.")
def ev_reg_mape(c: Ctx) -> Slots:
    c.metric_vars = {"mape": "mape"}
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte})
        mape = mean_absolute_percentage_error({c.yte}, pred)
        print(f"MAPE: {{mape:.1%}}")
        """, "eval", imports=["from sklearn.metrics import mean_absolute_percentage_error"])]}


@variant("metrics_evaluation", "ev_reg_training_rows", 1, paths=("tab",), cite=("eval",),
         marker=lambda c: f"{c.model}.predict({c.Xtr})", ok=_is_reg,
         why="{C_eval} compute{s_eval} R² and RMSE on the training rows and present{s_eval} "
             "them as "
             "the model's accuracy; the test split is never scored, so the numbers reward "
             "overfitting.")
def ev_reg_train(c: Ctx) -> Slots:
    c.metric_vars = {"r2": "r2", "rmse": "rmse"}
    return {"evaluate": [code(f"""
        fitted = {c.model}.predict({c.Xtr})
        r2 = r2_score({c.ytr}, fitted)
        rmse = np.sqrt(mean_squared_error({c.ytr}, fitted))
        print(f"R2 = {{r2:.3f}}, RMSE = {{rmse:.2f}}")
        """, "eval", imports=["from sklearn.metrics import mean_squared_error, r2_score",
                              "import numpy as np"])]}


@variant("metrics_evaluation", "ev_reg_rounded_accuracy", 1, paths=("tab",), cite=("eval",),
         marker="accuracy_score(", ok=lambda c: _is_reg(c) and c.d.key == "wine",
         why="{C_eval} round{s_eval} the regression output and scores it with accuracy, a "
             "classification metric: predicting 6 for a 7 counts the same as predicting 3, and "
             "with most wines scored 5 or 6 a constant guess already gets a high accuracy.")
def ev_reg_rounded(c: Ctx) -> Slots:
    c.metric_vars = {"accuracy": "acc"}
    return {"evaluate": [code(f"""
        pred = {c.model}.predict({c.Xte}).round().astype(int)
        acc = accuracy_score({c.yte}, pred)
        print("accuracy:", round(acc, 3))
        """, "eval", imports=["from sklearn.metrics import accuracy_score"])]}


# ---- forecasting ---------------------------------------------------------------------------


def _ts_preds(c: Ctx) -> tuple[str, str, str]:
    """(lines giving `pred`, `actual` and `seasonal_naive` on the test period, truth, pred)."""
    d = c.d
    s = naive_lag(d)
    if c.path == "stats":
        return (f"actual = {c.yte}\npred = forecast.loc[{c.yte}.index]\n"
                f"seasonal_naive = {c.ser}.shift({s}).loc[{c.yte}.index]", "actual", "pred")
    g = f'{c.df}.groupby("{d.series}")[{c.T}]' if d.series else f"{c.df}[{c.T}]"
    return (f"actual = {c.yte}\npred = {c.model}.predict({c.Xte})\n"
            f"seasonal_naive = {g}.shift({s}).loc[{c.test_df}.index]", "actual", "pred")


@variant("metrics_evaluation", "ev_ts_vs_seasonal_naive", 3, paths=("ml", "stats"),
         cite=("eval",), marker="seasonal_naive",
         why="{C_eval} compare{s_eval} the forecast with a seasonal-naive forecast (same "
             "{freq_word} {S} {freq_word}s earlier) on the hold-out period using MAE, RMSE and "
             "WAPE, which stays meaningful when {target} is small or zero, so the reader sees "
             "whether the model beats the obvious baseline.")
def ev_ts_naive(c: Ctx) -> Slots:
    lines, a, p = _ts_preds(c)
    c.metrics_dict = "test_metrics"
    return {"evaluate": [code(f"""
        {lines}
        ok = seasonal_naive.notna()


        def scores(y_true, y_pred):
            return {{"mae": mean_absolute_error(y_true, y_pred),
                    "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
                    "wape": float(np.abs(y_true - y_pred).sum() / np.abs(y_true).sum())}}


        test_metrics = scores({a}[ok], {p}[ok])
        naive_metrics = scores({a}[ok], seasonal_naive[ok])
        pd.DataFrame({{"model": test_metrics, "seasonal naive": naive_metrics}}).round(3)
        """, "eval", imports=["from sklearn.metrics import mean_absolute_error, "
                              "mean_squared_error", "import numpy as np"])]}


@variant("metrics_evaluation", "ev_ts_error_profile", 3, paths=("ml", "stats"), cite=("eval",),
         marker="wape",
         why="{C_eval} report{s_eval} MAE and WAPE for the model and for a seasonal-naive "
             "baseline on the hold-out period and then plot{s_eval} the error over the test "
             "dates (and by series where there are several), showing where the forecast "
             "fails, not just one number.")
def ev_ts_profile(c: Ctx) -> Slots:
    lines, a, p = _ts_preds(c)
    d = c.d
    c.metrics_dict = "test_metrics"
    if c.path == "ml" and d.series:
        grp = (f'err = pd.DataFrame({{"{d.series}": {c.test_df}["{d.series}"], "date": '
               f'{c.test_df}["{d.date}"], "abs_err": (actual - pred).abs()}})\n'
               'err.groupby("date")["abs_err"].mean().plot(title="MAE per test date")\n'
               f'err.groupby("{d.series}")["abs_err"].mean().nlargest(5)')
    else:
        grp = '(actual - pred).abs().plot(title="absolute error over the test period")'
    return {"evaluate": [code(f"""
        {lines}
        mask = seasonal_naive.notna()
        wape = np.abs(actual - pred)[mask].sum() / actual[mask].abs().sum()
        wape_naive = np.abs(actual - seasonal_naive)[mask].sum() / actual[mask].abs().sum()
        test_metrics = {{"mae": mean_absolute_error(actual[mask], pred[mask]), "wape": wape,
                        "wape_seasonal_naive": wape_naive}}
        print({{k: round(float(v), 3) for k, v in test_metrics.items()}})
        """, "eval", imports=["from sklearn.metrics import mean_absolute_error",
                              "import numpy as np"]),
        code(grp, "eval", imports=["import matplotlib.pyplot as plt"])]}


@variant("metrics_evaluation", "ev_ts_mae_only", 2, paths=("ml", "stats"), cite=("eval",),
         marker="mean_absolute_error(",
         why="{C_eval} report{s_eval} one MAE over the hold-out period: a fitting, held-out "
             "metric, but with no naive baseline it is impossible to tell whether the "
             "forecast is any good, and the error is not broken down by date or series.")
def ev_ts_mae(c: Ctx) -> Slots:
    lines, a, p = _ts_preds(c)
    lines = "\n".join(ln for ln in lines.splitlines() if "seasonal_naive" not in ln)
    c.metric_vars = {"mae": "mae"}
    return {"evaluate": [code(f"""
        {lines}
        mae = mean_absolute_error({a}, {p})
        print(f"hold-out MAE: {{mae:.1f}} {c.d.unit}")
        """, "eval", imports=["from sklearn.metrics import mean_absolute_error"])]}


@variant("metrics_evaluation", "ev_ts_rmse_plot", 2, paths=("ml", "stats"), cite=("eval",),
         marker="plt.plot(",
         why="{C_eval} show{s_eval} RMSE on the hold-out period and a plot of actual against "
             "forecast: appropriate, but there is no naive baseline and no scale-free measure, "
             "so the size of the error cannot be put in context.")
def ev_ts_rmse(c: Ctx) -> Slots:
    lines, a, p = _ts_preds(c)
    lines = "\n".join(ln for ln in lines.splitlines() if "seasonal_naive" not in ln)
    c.metric_vars = {"rmse": "rmse"}
    x = f'{c.test_df}["{c.d.date}"]' if c.path == "ml" else f"{c.yte}.index"
    return {"evaluate": [code(f"""
        {lines}
        rmse = np.sqrt(mean_squared_error({a}, {p}))
        print("RMSE:", round(rmse, 2))
        plt.figure(figsize=(12, 4))
        plt.plot({x}, {a}, ".", label="actual", alpha=0.5)
        plt.plot({x}, {p}, ".", label="forecast", alpha=0.5)
        plt.legend()
        """, "eval", imports=["from sklearn.metrics import mean_squared_error",
                              "import numpy as np", "import matplotlib.pyplot as plt"])]}


@variant("metrics_evaluation", "ev_ts_mape_with_zeros", 1, paths=("ml", "stats"),
         cite=("eval",), marker="mean_absolute_percentage_error(", ok=lambda c: c.d.zeros,
         why="{C_eval} use{s_eval} MAPE as the only metric although {target} is often 0: the "
             "percentage error explodes (or is infinite) on those {freq_word}s, so the score is "
             "driven by near-zero {freq_word}s and cannot rank forecasts sensibly.")
def ev_ts_mape(c: Ctx) -> Slots:
    lines, a, p = _ts_preds(c)
    lines = "\n".join(ln for ln in lines.splitlines() if "seasonal_naive" not in ln)
    c.metric_vars = {"mape": "mape"}
    return {"evaluate": [code(f"""
        {lines}
        mape = mean_absolute_percentage_error({a}, {p})
        print(f"MAPE = {{mape:.2%}}")
        """, "eval", imports=["from sklearn.metrics import mean_absolute_percentage_error"])]}


@variant("metrics_evaluation", "ev_ts_in_sample", 1, paths=("ml", "stats"), cite=("eval",),
         marker=lambda c: "res.fittedvalues" if c.path == "stats" else f"predict({c.Xtr})",
         why="{C_eval} measure{s_eval} the error of the in-sample fit on the training period "
             "and call{s_eval} it forecast accuracy; the hold-out period is never scored, so "
             "the number "
             "says nothing about how well the model forecasts.")
def ev_ts_insample(c: Ctx) -> Slots:
    c.metric_vars = {"mae": "mae", "r2": "r2"}
    if c.path == "stats":
        body = (f"fitted = res.fittedvalues\nmae = mean_absolute_error({c.ytr}.dropna(), "
                f"fitted.loc[{c.ytr}.dropna().index])\nr2 = r2_score({c.ytr}.dropna(), "
                f"fitted.loc[{c.ytr}.dropna().index])")
    else:
        body = (f"fitted = {c.model}.predict({c.Xtr})\nmae = mean_absolute_error({c.ytr}, fitted)"
                f"\nr2 = r2_score({c.ytr}, fitted)")
    return {"evaluate": [code(body + '\nprint(f"MAE {mae:.1f}, R2 {r2:.3f}")', "eval",
                              imports=["from sklearn.metrics import mean_absolute_error, "
                                       "r2_score"])]}


# --------------------------------------------------------------------------------------------
# MLflow logging
# --------------------------------------------------------------------------------------------

BASELINE_METRICS = {"ev_cls_ranking_threshold", "ev_cls_topk_segments",
                    "ev_reg_baseline_residuals", "ev_reg_report_function",
                    "ev_ts_vs_seasonal_naive", "ev_ts_error_profile"}
TRAIN_SET_METRICS = {"ev_cls_training_rows", "ev_reg_training_rows", "ev_ts_in_sample"}


def _experiment(c: Ctx) -> str:
    return c.d.title.lower().replace(" ", "-")


def _metrics_expr(c: Ctx) -> str:
    if c.metrics_dict:
        return c.metrics_dict
    return "{" + ", ".join(f'"{k}": {v}' for k, v in c.metric_vars.items()) + "}"


def _mlflow_flavor(c: Ctx) -> str:
    return "statsmodels" if c.path == "stats" else "sklearn"


def _good_metrics(c: Ctx) -> bool:
    return c.variants.get("metrics_evaluation") not in TRAIN_SET_METRICS


@variant("mlflow_logging", "ml_full_run", 3, cite=("ml",),
         marker=lambda c: "mlflow.statsmodels.log_model(" if c.path == "stats"
         else "infer_signature(", ok=_good_metrics,
         why="{C_ml} open{s_ml} a named run in the \"{exp}\" experiment and log{s_ml} the chosen "
             "hyper-parameters, the held-out metrics from {c_eval} and the fitted model"
             "{sig_note}, so runs can be compared and the model reloaded from the tracking "
             "server.")
def ml_full(c: Ctx) -> Slots:
    run = f"{c.fam.key}-{c.variants['model_training'].replace('train_', '')}"
    if c.path == "stats":
        log_model = 'mlflow.statsmodels.log_model(res, artifact_path="model")'
        sig = ""
    else:
        out = (f"{c.model}.predict_proba({c.Xte})[:, 1]" if c.cls else
               f"{c.model}.predict({c.Xte})")
        sig = f"signature = infer_signature({c.Xte}, {out})\n"
        log_model = (f'mlflow.sklearn.log_model({c.model}, artifact_path="model", '
                     f"signature=signature,\n                         "
                     f"input_example={c.Xte}.head(3))")
    body = (f'mlflow.set_experiment("{_experiment(c)}")\n'
            f'with mlflow.start_run(run_name="{run}"):\n'
            + ind(f"mlflow.log_params({c.params_expr})\n"
                  f'mlflow.log_param("n_train_rows", len({c.ytr}))\n'
                  f"mlflow.log_metrics({{k: float(v) for k, v in {_metrics_expr(c)}.items()}})\n"
                  + sig + log_model))
    imps = ["import mlflow"] + (["from mlflow.models import infer_signature"] if sig else [])
    return {"mlflow": [md("## Experiment tracking", "ml_h", optional=True),
                       code(body, "ml", imports=imps)]}


@variant("mlflow_logging", "ml_autolog_plus_test_metrics", 3, cite=("ml",),
         marker="mlflow.end_run()", ok=_good_metrics,
         why="{C_ml} set{s_ml} a named experiment, turn{s_ml} on autologging (parameters, "
             "model, signature and input example) around the training, then add{s_ml} the held-out "
             "metrics from {c_eval} and a data tag to the same run before closing it.")
def ml_autolog_plus(c: Ctx) -> Slots:
    pre = code(f"""
        mlflow.set_experiment("{_experiment(c)}")
        mlflow.autolog(log_input_examples=True, log_model_signatures=True)
        run = mlflow.start_run(run_name="{c.fam.key}-{c.nb_id}")
        """, "ml", imports=["import mlflow"])
    post = code(f"""
        mlflow.log_metrics({{f"test_{{k}}": float(v) for k, v in {_metrics_expr(c)}.items()}})
        mlflow.set_tag("data", "{' + '.join(c.d.files)}")
        mlflow.end_run()
        print("logged run", run.info.run_id)
        """, "ml")
    return {"mlflow_pre": [pre], "mlflow": [post]}


@variant("mlflow_logging", "ml_params_metrics_no_model", 2, cite=("ml",),
         marker="with mlflow.start_run():",
         why="{C_ml} log{s_ml} the hyper-parameters and the evaluation metrics in a run, but "
             "the fitted model is not logged (nothing to reload or deploy from the run) and the "
             "run goes to the default experiment without a name.")
def ml_params_metrics(c: Ctx) -> Slots:
    body = (f"with mlflow.start_run():\n    mlflow.log_params({c.params_expr})\n"
            f"    for name, value in {_metrics_expr(c)}.items():\n"
            "        mlflow.log_metric(name, float(value))")
    return {"mlflow": [code(body, "ml", imports=["import mlflow"])]}


@variant("mlflow_logging", "ml_autolog_only", 2, cite=("ml",), marker="mlflow.autolog()",
         why="{C_ml} only call{s_ml} mlflow.autolog(): parameters, training metrics and the "
             "model of each fit are recorded, but the held-out metrics computed in {c_eval} "
             "are never logged and the runs land unnamed in the default experiment.")
def ml_autolog(c: Ctx) -> Slots:
    return {"mlflow_pre": [code("mlflow.autolog()", "ml", imports=["import mlflow"])]}


@variant("mlflow_logging", "ml_logs_only_a_label", 1, cite=("ml",),
         marker='mlflow.log_param("model"',
         why="{C_ml} start{s_ml} a run and log{s_ml} only a tag and the model's class name: no "
             "hyper-parameters, no metrics, no model, so the run cannot be compared with "
             "anything or reproduced.")
def ml_useless(c: Ctx) -> Slots:
    return {"mlflow": [code(f"""
        mlflow.start_run()
        mlflow.set_tag("project", "{c.d.key}")
        mlflow.log_param("model", "{c.fam.cls}")
        mlflow.end_run()
        """, "ml", imports=["import mlflow"])]}


@variant("mlflow_logging", "ml_training_score_as_accuracy", 1, paths=("tab", "ml"), cite=("ml",),
         marker=lambda c: f'mlflow.log_metric("accuracy", {c.model}.score({c.Xtr}',
         why=lambda c: (
             "{C_ml} log{s_ml} a single metric named \"accuracy\" that is "
             + ("the model's score on its own training rows" if c.cls else
                "the R² of the model on its own training rows, mislabelled as accuracy")
             + "; no parameters, no held-out metrics and no model are recorded."))
def ml_train_score(c: Ctx) -> Slots:
    return {"mlflow": [code(f"""
        with mlflow.start_run(run_name="final"):
            mlflow.log_metric("accuracy", {c.model}.score({c.Xtr}, {c.ytr}))
        """, "ml", imports=["import mlflow"])]}


@variant("mlflow_logging", "ml_requested_but_missing", 1, cite=(), marker=None, absent="mlflow",
         why="The request asks for the experiment to be tracked in MLflow, but no cell uses "
             "MLflow: parameters, metrics and the model are not recorded anywhere.")
def ml_missing(c: Ctx) -> Slots:
    return {}


@variant("mlflow_logging", "ml_not_used", NA, cite=(), marker=None, absent="mlflow",
         why="The notebook does not use MLflow and the request does not ask for experiment "
             "tracking.")
def ml_na(c: Ctx) -> Slots:
    return {}


# --------------------------------------------------------------------------------------------
# Model use
# --------------------------------------------------------------------------------------------


def _new_lines(c: Ctx, var: str, with_load: bool = True) -> list[str]:
    lines = [dedent(c.d.new_load).replace("{new}", var)] if with_load else []
    lines += [x.replace("{f}", var) for x in c.new_imp_pre]
    if c.fe_func:
        lines.append(f"{var} = {c.fe_func}({var})")
    elif c.fe_lines:
        lines += [x.replace("{f}", var) for x in c.fe_lines]
    lines += [x.replace("{f}", var) for x in c.new_imp_post]
    lines += [x.replace("{f}", var) for x in c.new_enc]
    return lines


def _out_col(c: Ctx) -> str:
    return "probability" if c.cls else f"predicted_{c.d.target}"


def _predict(c: Ctx, model: str, frame: str, cols: str) -> str:
    if c.cls:
        return f"{model}.predict_proba({frame}[{cols}])[:, 1]"
    return f"{model}.predict({frame}[{cols}])"


def _model_path(c: Ctx) -> str:
    return f"models/{c.d.key}_{c.fam.key}.joblib"


TUNED_TRAINING = {"train_grid_search_cv", "train_random_search_cv", "train_early_stopping_val",
                  "train_tuned_on_test", "train_early_stopping_on_test",
                  "train_ts_validation_window"}


def _tab(c: Ctx) -> bool:
    return c.path == "tab"


@variant("model_use", "use_joblib_bundle", 3, paths=("tab",), cite=("save", "use"),
         marker="joblib.load(",
         ok=lambda c: c.variants.get("feature_engineering") != "fe_leaky_column",
         why=lambda c: (
             "{C_save} save{s_save} the fitted pipeline together with its feature list"
             + (" and decision threshold" if c.threshold else "") + "; {c_use} load{s_use} it "
             "back, prepare{s_use} {new_desc} with exactly the training steps, check{s_use} "
             "that the expected columns are present and write{s_use} {id_col} with "
             + ("probabilities and flags" if c.cls and c.threshold else "the scores")
             + " to {out_file}."))
def use_bundle(c: Ctx) -> Slots:
    d = c.d
    bundle = f'{{"model": {c.model}, "features": {c.FEATS}' + (
        f', "threshold": {c.threshold}' if c.threshold else "") + "}"
    save = code(f"""
        Path("models").mkdir(exist_ok=True)
        joblib.dump({bundle}, "{_model_path(c)}")
        """, "save", imports=["import joblib", "from pathlib import Path"])
    col = _out_col(c)
    lines = ["bundle = joblib.load(\"" + _model_path(c) + "\")"] + _new_lines(c, c.new)
    lines += [f'missing_cols = set(bundle["features"]) - set({c.new}.columns)',
              'assert not missing_cols, f"new data lacks {missing_cols}"',
              f'{c.new}["{col}"] = ' + _predict(c, 'bundle["model"]', c.new, 'bundle["features"]')]
    out_cols = [d.id, col]
    if c.cls and c.threshold:
        lines.append(f'{c.new}["flag"] = ({c.new}["{col}"] >= bundle["threshold"]).astype(int)')
        out_cols.append("flag")
    lines.append(f"{c.new}[{qlist(out_cols)}].sort_values(\"{col}\", ascending=False).to_csv(\n"
                 f'    "{d.out_file}", index=False)')
    return {"save": [md("## Save and score new data", "use_h", optional=True), save],
            "use": [code("\n".join(lines), "use")]}


@variant("model_use", "use_scoring_function", 3, paths=("tab",), cite=("save", "use"),
         marker="def score_new(",
         ok=lambda c: c.variants.get("feature_engineering") != "fe_leaky_column",
         why="{C_save} persist{s_save} the trained pipeline; {c_use} define{s_use} score_new(), "
             "which loads the saved model and applies the same preparation steps as training "
             "before predicting, and use{s_use} it on {new_desc} to write {id_col} with the "
             "predictions to {out_file}.")
def use_function(c: Ctx) -> Slots:
    d = c.d
    save = code(f"""
        MODEL_PATH = Path("artifacts") / "{d.key}_model.joblib"
        MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({c.model}, MODEL_PATH)
        """, "save", imports=["import joblib", "from pathlib import Path"])
    prep = _new_lines(c, "frame", with_load=False)
    col = _out_col(c)
    body = "def score_new(frame, model_path=MODEL_PATH):\n    loaded = joblib.load(model_path)\n"
    body += "    frame = frame.copy()\n"
    if prep:
        body += ind("\n".join(prep)) + "\n"
    body += f'    frame["{col}"] = ' + _predict(c, "loaded", "frame", c.FEATS) + "\n"
    body += "    return frame\n\n\n"
    body += dedent(c.d.new_load).replace("{new}", c.new) + "\n"
    body += f"scored = score_new({c.new})\n"
    body += (f'scored[["{d.id}", "{col}"]].to_csv("{d.out_file}", index=False)\n'
             f'scored["{col}"].describe()')
    return {"save": [save], "use": [md("## Scoring", "use_h", optional=True),
                                    code(body, "use")]}


@variant("model_use", "use_in_memory_predict", 2, paths=("tab",), cite=("use",),
         marker=lambda c: f'{c.new}["{_out_col(c)}"] = {c.model}.predict',
         why="{C_use} prepare{s_use} {new_desc} with the training steps and predict{s_use} with "
             "the in-memory model, which works in this session, but the model is never saved: "
             "scoring again means re-running the whole notebook" + "{thr_note}.")
def use_memory(c: Ctx) -> Slots:
    col = _out_col(c)
    lines = _new_lines(c, c.new)
    lines.append(f'{c.new}["{col}"] = ' + _predict(c, c.model, c.new, c.FEATS))
    lines.append(f'{c.new}[["{c.d.id}", "{col}"]].to_csv("{c.d.out_file}", index=False)')
    return {"use": [code("\n".join(lines), "use")]}


@variant("model_use", "use_saved_never_loaded", 2, paths=("tab",), cite=("save", "use"),
         marker="joblib.dump(",
         why=lambda c: (
             "{C_save} save{s_save} the model, but {c_use} score{s_use} {new_desc} with the "
             "in-memory object instead of the saved file, so the artifact is never shown to "
             "work"
             + (", and the output is hard 0/1 labels at the default 0.5 cut-off" if c.cls else
                ", and there are no checks on the incoming columns") + "."))
def use_saved_only(c: Ctx) -> Slots:
    save = code(f'joblib.dump({c.model}, "{c.d.key}_model.pkl")', "save",
                imports=["import joblib"])
    lines = _new_lines(c, c.new)
    col = "prediction" if c.cls else _out_col(c)
    lines.append(f'{c.new}["{col}"] = {c.model}.predict({c.new}[{c.FEATS}])')
    lines.append(f'{c.new}.to_csv("{c.d.out_file}", index=False)')
    return {"save": [save], "use": [code("\n".join(lines), "use")]}


@variant("model_use", "use_refit_fresh_model", 1, paths=("tab",), cite=("save", "use"),
         marker="scoring_model.fit(",
         why=lambda c: (
             "{C_save} save{s_save} the model, but {c_use} build{s_use} a new "
             + c.fam.name + " with default settings and fit{s_use} it again instead of loading "
             "the saved one" + (", so the tuned hyper-parameters are thrown away and "
                               if c.variants.get("model_training") in TUNED_TRAINING
                               else ", so ")
             + "the predictions for {new_desc} come from a model that was never evaluated."))
def use_refit(c: Ctx) -> Slots:
    save = code(f'joblib.dump({c.model}, "{_model_path(c)}")', "save",
                imports=["import joblib"])
    pipe, _ = pipeline_expr(c, c.fam.cls + "()")
    col = _out_col(c)
    lines = ["# retrain so the model is fresh for scoring", f"scoring_model = {pipe}",
             f"scoring_model.fit({c.Xtr}, {c.ytr})"] + _new_lines(c, c.new)
    lines.append(f'{c.new}["{col}"] = ' + _predict(c, "scoring_model", c.new, c.FEATS))
    lines.append(f'{c.new}[["{c.d.id}", "{col}"]].to_csv("{c.d.out_file}", index=False)')
    return {"save": [save], "use": [code("\n".join(lines), "use")]}


@variant("model_use", "use_test_predictions_as_output", 1, paths=("tab",), cite=("use",),
         marker="predictions.to_csv(",
         why="{C_use} write{s_use} the model's predictions for the held-out test rows to "
             "{out_file} as the deliverable; {new_desc} is never loaded or scored, so the "
             "user's actual request is not answered and no model is saved.")
def use_test_preds(c: Ctx) -> Slots:
    return {"use": [code(f"""
        predictions = {c.Xte}.copy()
        predictions["prediction"] = {c.model}.predict({c.Xte})
        predictions.to_csv("{c.d.out_file}")
        predictions.head()
        """, "use")]}


@variant("model_use", "use_skips_preprocessing", 1, paths=("tab",), cite=("use",),
         marker=lambda c: f"(incoming[{c.FEATS}])",
         ok=lambda c: bool(c.fe_func or c.fe_lines or c.new_imp_pre or c.new_imp_post
                           or c.new_enc),
         why="{C_use} load{s_use} the saved model but feed{s_use} it the new rows straight from "
             "the file: {skipped} from training are not applied to them, so the call either "
             "fails on missing columns or scores unprepared values.")
def use_skip(c: Ctx) -> Slots:
    col = _out_col(c)
    loader = dedent(c.d.new_load).replace("{new}", "incoming")
    body = (f'joblib.dump({c.model}, "{_model_path(c)}")\n'
            f'loaded = joblib.load("{_model_path(c)}")\n' + loader + "\n"
            f'incoming["{col}"] = ' + _predict(c, "loaded", "incoming", c.FEATS) + "\n"
            f'incoming[["{c.d.id}", "{col}"]].to_csv("{c.d.out_file}", index=False)')
    return {"use": [code(body, "use", imports=["import joblib"])]}


# ---- forecasting ---------------------------------------------------------------------------


def _future_frame_lines(c: Ctx, model: str) -> list[str]:
    d = c.d
    fut = dedent(d.future_load).replace("{fut}", "future").replace("{df}", c.df)
    keys = [d.series, d.date] if d.series else [d.date]
    lines = [fut, f"history = pd.concat([{c.df}, future], ignore_index=True).sort_values("
                  f"{qlist(keys)})"]
    if c.fe_func:
        lines.append(f"horizon = {c.fe_func}(history)")
    else:
        lines += [x.replace("{f}", "history") for x in c.fe_lines]
        lines.append("horizon = history")
    lines.append(f'horizon = horizon[horizon["{d.date}"].isin(future["{d.date}"])].copy()')
    lines.append(f'horizon["forecast"] = {model}.predict(horizon[{c.FEATS}])')
    lines.append(f'horizon[{qlist(keys + ["forecast"])}].to_csv("{d.out_file}", index=False)')
    return lines


@variant("model_use", "use_ts_future_saved", 3, paths=("ml",), cite=("save", "use"),
         marker="joblib.load(",
         why="{C_save} save{s_save} the fitted model; {c_use} load{s_use} it, append{s_use} the "
             "known future inputs for {new_desc} to the history, rebuild{s_use} the features "
             "with "
             "the training code so the lags reach back into observed data, and write{s_use} "
             "dated forecasts for the next {H} {freq_word}s to {out_file}.")
def use_ts_saved(c: Ctx) -> Slots:
    save = code(f"""
        Path("models").mkdir(exist_ok=True)
        joblib.dump({c.model}, "{_model_path(c)}")
        """, "save", imports=["import joblib", "from pathlib import Path"])
    lines = [f'forecaster = joblib.load("{_model_path(c)}")'] + _future_frame_lines(c, "forecaster")
    return {"save": [md(f"## Forecast the next {c.d.horizon} {c.d.freq_word}s", "use_h",
                        optional=True), save], "use": [code("\n".join(lines), "use")]}


@variant("model_use", "use_ts_future_in_memory", 2, paths=("ml",), cite=("use",),
         marker="history = pd.concat(",
         why="{C_use} build{s_use} the future rows from the history plus {new_desc} with the "
             "training feature code and forecast{s_use} the next {H} {freq_word}s correctly, "
             "but with the in-memory model only: nothing is saved, so the forecast cannot be "
             "reproduced without retraining.")
def use_ts_memory(c: Ctx) -> Slots:
    return {"use": [code("\n".join(_future_frame_lines(c, c.model)), "use")]}


@variant("model_use", "use_ts_test_window_as_forecast", 1, paths=("ml",), cite=("use",),
         marker="forecast_table.to_csv(",
         why="{C_use} write{s_use} the model's predictions for the hold-out period to "
             "{out_file} as if they were the forecast for the next {H} {freq_word}s: no future "
             "rows are built from {new_desc}, so the file contains dates that are already in "
             "the past.")
def use_ts_test(c: Ctx) -> Slots:
    d = c.d
    keys = [d.series, d.date] if d.series else [d.date]
    return {"use": [code(f"""
        forecast_table = {c.test_df}[{qlist(keys)}].copy()
        forecast_table["forecast"] = {c.model}.predict({c.Xte})
        forecast_table.to_csv("{d.out_file}", index=False)
        """, "use")]}


def _history(c: Ctx) -> str:
    return (f'history = pd.concat([{c.ytr}, {c.yte}]).asfreq("{c.d.freq}")'
            f'.interpolate(limit=3)' + (".ffill()" if c.fam.key == "ets" else ""))


def _ets_cfg(c: Ctx) -> str:
    if c.variants.get("model_training") == "train_ets_aicc":
        return "**best_cfg"
    return 'trend="add", seasonal="add"'


@variant("model_use", "use_stats_saved_updated", 3, paths=("stats",), cite=("save", "use"),
         marker=lambda c: ".apply(history)" if c.fam.key == "sarimax" else "joblib.load(",
         why=lambda c: (
             ("{C_save} save{s_save} the fitted SARIMAX results; {c_use} load{s_use} them and "
              "appl{ies_use} the same parameters to the full history (training plus hold-out), "
              "so the "
              if c.fam.key == "sarimax" else
              "{C_save} refit{s_save} the chosen Holt-Winters configuration on the full history "
              "and save{s_save} it; {c_use} load{s_use} it back, so the ")
             + "forecast starts right after the last observation, and write{s_use} the next {H} "
               "{freq_word}s with 90% intervals (or point forecasts) and dates to {out_file}."))
def use_stats_saved(c: Ctx) -> Slots:
    d = c.d
    if c.fam.key == "sarimax":
        save = code(f"""
            Path("models").mkdir(exist_ok=True)
            res.save("models/{d.key}_sarimax.pkl")
            """, "save", imports=["from pathlib import Path"])
        use = code(f"""
            loaded = SARIMAXResults.load("models/{d.key}_sarimax.pkl")
            {_history(c)}
            updated = loaded.apply(history)  # same parameters, state runs to the last observation
            fc = updated.get_forecast(steps={d.horizon}).summary_frame(alpha=0.1)
            fc[["mean", "mean_ci_lower", "mean_ci_upper"]].to_csv("{d.out_file}")
            fc.head()
            """, "use", imports=["from statsmodels.tsa.statespace.sarimax import SARIMAXResults"])
    else:
        save = code(f"""
            {_history(c)}
            final = ExponentialSmoothing(history, seasonal_periods={d.season}, {_ets_cfg(c)}).fit()
            Path("models").mkdir(exist_ok=True)
            joblib.dump(final, "models/{d.key}_ets.joblib")
            """, "save", imports=["import joblib", "from pathlib import Path", c.fam.imp])
        use = code(f"""
            loaded = joblib.load("models/{d.key}_ets.joblib")
            fc = loaded.forecast({d.horizon}).rename("forecast")
            fc.to_frame().to_csv("{d.out_file}")
            fc.head()
            """, "use")
    return {"save": [md(f"## Forecast the next {d.horizon} {d.freq_word}s", "use_h",
                        optional=True), save], "use": [use]}


@variant("model_use", "use_stats_in_memory", 2, paths=("stats",), cite=("use",),
         marker="history = pd.concat(",
         why="{C_use} update{s_use} the model with the full history and forecast{s_use} the "
             "next {H} {freq_word}s from the last observation, which is right, but the model is "
             "not saved and the forecast is only plotted, without intervals or an output file.")
def use_stats_memory(c: Ctx) -> Slots:
    d = c.d
    if c.fam.key == "sarimax":
        fc = f"next_fc = res.apply(history).forecast(steps={d.horizon})"
    else:
        fc = (f"next_fc = ExponentialSmoothing(history, seasonal_periods={d.season}, "
              f"{_ets_cfg(c)}).fit().forecast({d.horizon})")
    return {"use": [code(f"""
        {_history(c)}
        {fc}
        ax = history.iloc[-{4 * d.horizon}:].plot(figsize=(12, 4), label="history")
        next_fc.plot(ax=ax, label="forecast")
        ax.legend()
        """, "use")]}


@variant("model_use", "use_stats_from_training_end", 1, paths=("stats",), cite=("use",),
         marker=lambda c: f"future_forecast = res.forecast(steps={c.d.horizon})",
         why="{C_use} call{s_use} forecast() on the model fitted to the training window and "
             "save{s_use} the result as the next {H} {freq_word}s: the forecast starts right "
             "after the "
             "training data, inside the hold-out period that has already happened, not after "
             "the last observation.")
def use_stats_train_end(c: Ctx) -> Slots:
    return {"use": [code(f"""
        future_forecast = res.forecast(steps={c.d.horizon})
        future_forecast.to_csv("{c.d.out_file}")
        future_forecast.plot(title="forecast")
        """, "use")]}


# --------------------------------------------------------------------------------------------
# Cell organization (applied to the assembled list of cells)
# --------------------------------------------------------------------------------------------

SECTION_TITLES = {
    "install": "Setup", "load": "Load the data", "eda": "Exploratory analysis",
    "impute_pre": "Missing values", "features": "Features", "split": "Train/test split",
    "impute_post": "Missing values", "encode": "Preprocessing", "mlflow_pre": "Model training",
    "train": "Model training", "evaluate": "Evaluation", "mlflow": "Experiment tracking",
    "save": "Use the model", "use": "Use the model",
}

Placed = list[tuple[str, Cell]]  # (slot, cell)


def _strip_heading(cell: Cell) -> Cell | None:
    lines = [ln for ln in cell.src.splitlines() if not ln.startswith("#")]
    text = "\n".join(lines).strip()
    if not text:
        return None
    return Cell("markdown", text, set(cell.roles), [], cell.optional)


def _sectioned(c: Ctx, placed: Placed, numbered: bool, notes: bool) -> list[Cell]:
    out: list[Cell] = []
    seen_titles: set[str] = set()
    n = 0
    for slot, cell in placed:
        if slot in ("title", "intro", "summary"):
            out.append(cell)
            continue
        note = cell.kind == "markdown" and cell.optional
        if note and not notes:
            continue
        title = SECTION_TITLES.get(slot)
        if title and title not in seen_titles:
            seen_titles.add(title)
            n += 1
            head = f"## {n}. {title}" if numbered else f"## {title}"
            out.append(Cell("markdown", head, {"org_heading"}))
        if note:
            stripped = _strip_heading(cell)
            if stripped:
                out.append(stripped)
            continue
        out.append(cell)
    return out


def _summary(c: Ctx, numbered_n: int | None, heading: str) -> Cell:
    d = c.d
    head = f"## {numbered_n}. {heading}" if numbered_n else f"## {heading}"
    what = {"tab": f"{c.fam.name} for {d.target} ({d.target_desc})",
            "ml": f"{c.fam.name}, forecasting {d.horizon} {d.freq_word}s ahead",
            "stats": f"{c.fam.name} on the {_adjective(d)} {d.target} series"}[c.path]
    lines = [head, f"- Model: {what}.", "- Evaluation: see the evaluation section above.",
             f"- Output: `{d.out_file}`.",
             "- Next steps: monitor the input data for drift and retrain on a schedule."]
    return Cell("markdown", "\n".join(lines), {"org_summary"})


@variant("cell_organization", "org_numbered_sections", 3, cite=("org_heading", "org_summary"),
         marker="## 1. ",
         why="The notebook is split into numbered sections with markdown headings "
             "({c_org_heading}), short explanations where decisions are made, one step per "
             "code cell in top-to-bottom order and a closing summary in {c_org_summary}.")
def org_numbered(c: Ctx, placed: Placed) -> list[Cell]:
    out = _sectioned(c, placed, numbered=True, notes=True)
    n = sum(1 for x in out if "org_heading" in x.roles)
    out.append(_summary(c, n + 1, "Summary"))
    return out


@variant("cell_organization", "org_sections_with_notes", 3, cite=("org_heading", "org_summary"),
         marker="## Conclusions",
         why="Each stage has its own markdown heading ({c_org_heading}) and the reasoning is "
             "written next to the code; cells are small, ordered and free of dead code, and "
             "{c_org_summary} closes with conclusions.")
def org_notes(c: Ctx, placed: Placed) -> list[Cell]:
    out = _sectioned(c, placed, numbered=False, notes=True)
    out.append(_summary(c, None, "Conclusions"))
    return out


def _merge(cells: list[Cell]) -> Cell:
    roles: set[str] = set()
    imports: list[str] = []
    for x in cells:
        roles |= x.roles
        imports += x.imports
    return Cell("code", "\n\n".join(x.src for x in cells), roles, imports)


def _code_only(placed: Placed) -> Placed:
    return [(s, x) for s, x in placed if x.kind == "code"]


@variant("cell_organization", "org_sparse_with_debug", 2, cite=("org_debug", "org_merged"),
         marker=lambda c: c.notes["debug"],
         why="The notebook runs top to bottom, but apart from the title there is almost no "
             "markdown, {c_org_merged} crams training and evaluation into one long cell, and "
             "{c_org_debug} is a leftover debugging cell.")
def org_sparse(c: Ctx, placed: Placed) -> list[Cell]:
    out: list[Cell] = []
    merged: list[Cell] = []
    placed = [(s, x) for s, x in placed if not (x.kind == "markdown" and x.optional)]
    debug = c.rng.choice([f"{c.Xtr}.shape", f"print({c.df}.columns.tolist())",
                          f"{c.Xtr}.head()", f"print(len({c.df}))"])
    if c.path == "stats":
        debug = c.rng.choice([f"{c.ser}.tail()", f"print(len({c.ytr}), len({c.yte}))"])
    c.notes["debug"] = debug
    debug_done = False
    for slot, cell in placed:
        if slot in ("intro", "summary"):
            continue
        if slot in ("train", "mlflow_pre", "evaluate") and cell.kind == "code":
            merged.append(cell)
            continue
        if merged and slot not in ("train", "mlflow_pre", "evaluate"):
            m = _merge(merged)
            m.roles.add("org_merged")
            out.append(m)
            merged = []
        out.append(cell)
        if slot == "split" and not debug_done:
            debug_done = True
            out.append(Cell("code", debug, {"org_debug"}))
    if merged:
        m = _merge(merged)
        m.roles.add("org_merged")
        out.append(m)
    return out


@variant("cell_organization", "org_commented_leftovers", 2,
         cite=("org_dead", "org_dup"), marker=lambda c: c.notes["dead"],
         why="Sections have headings and the cells run in order, but {c_org_dead} still carries "
             "commented-out code from an earlier attempt and {c_org_dup} is a stray display "
             "cell left between two steps without explanation.")
def org_leftovers(c: Ctx, placed: Placed) -> list[Cell]:
    out = _sectioned(c, placed, numbered=False, notes=False)
    alt = "LogisticRegression(max_iter=500)" if c.cls else "LinearRegression()"
    if c.path == "stats":
        dead = f"# res = ARIMA({c.ytr}, order=(2, 1, 2)).fit()"
    else:
        dead = f"# {c.model} = {alt}"
    dead_block = f"{dead}\n# {c.model}.fit({c.Xtr}, {c.ytr})" if c.path != "stats" else dead
    c.notes["dead"] = dead
    done_dead = done_dup = False
    result: list[Cell] = []
    for cell in out:
        if not done_dead and "train" in cell.roles and cell.kind == "code":
            cell = Cell("code", dead_block + "\n" + cell.src, cell.roles | {"org_dead"},
                        cell.imports)
            done_dead = True
        result.append(cell)
        if not done_dup and ("fe" in cell.roles or "split" in cell.roles) and \
                cell.kind == "code":
            shown = f"{c.df}.head()" if c.path != "stats" else f"{c.ser}.head()"
            result.append(Cell("code", shown, {"org_dup"}))
            done_dup = True
    return result


@variant("cell_organization", "org_monolithic", 1, cite=("org_merged",),
         marker=lambda c: c.notes["mono"],
         why="Apart from the title there is no markdown: everything from missing values to "
             "evaluation sits in a few giant cells ({c_org_merged}, {mono_lines} lines in "
             "total), so no step can be read, rerun or reviewed on its own.")
def org_mono(c: Ctx, placed: Placed) -> list[Cell]:
    groups = [("impute_pre", "features", "split", "impute_post", "encode"),
              ("mlflow_pre", "train", "evaluate", "mlflow")]
    out: list[Cell] = []
    pending: list[Cell] = []
    current: tuple[str, ...] | None = None
    for slot, cell in [p for p in placed if p[0] == "title"] + _code_only(placed):
        grp = next((g for g in groups if slot in g), None)
        if grp is not current and pending:
            m = _merge(pending)
            m.roles.add("org_merged")
            out.append(m)
            pending = []
        current = grp
        if grp:
            pending.append(cell)
        else:
            out.append(cell)
    if pending:
        m = _merge(pending)
        m.roles.add("org_merged")
        out.append(m)
    big = [x for x in out if "org_merged" in x.roles]
    c.notes["mono"] = next(ln for ln in big[-1].src.splitlines()
                           if ln.strip() and not ln.startswith(("import ", "from ", "!", "%")))
    c.notes["mono_lines"] = str(sum(len(x.src.splitlines()) for x in big))
    return out


@variant("cell_organization", "org_out_of_order", 1, cite=("org_moved", "train", "org_dup"),
         marker=lambda c: c.notes["moved"],
         why="The cells are not in execution order: {c_org_moved} evaluates the model before "
             "{c_train} train{s_train} it, so a top-to-bottom run fails, and {c_org_dup} "
             "repeats an "
             "earlier cell verbatim; markdown is limited to the title.")
def org_disorder(c: Ctx, placed: Placed) -> list[Cell]:
    cells = [(s, x) for s, x in placed if x.kind == "code" or s == "title"]
    evals = [i for i, (s, x) in enumerate(cells) if s == "evaluate"]
    first_train = next(i for i, (s, x) in enumerate(cells) if s == "train")
    moved = cells[evals[0]]
    moved = (moved[0], Cell("code", moved[1].src, moved[1].roles | {"org_moved"},
                            moved[1].imports))
    rest = [x for i, x in enumerate(cells) if i != evals[0]]
    rest.insert(first_train, moved)
    c.notes["moved"] = next(ln for ln in moved[1].src.splitlines()
                            if ln.strip() and not ln.startswith(("import ", "from ")))
    out = [x for _, x in rest]
    src_dup = next(x for s, x in rest if s in ("split", "load"))
    pos = max(i for i, x in enumerate(out) if "eval" in x.roles or "train" in x.roles) + 1
    out.insert(pos, Cell("code", src_dup.src, {"org_dup"}, src_dup.imports))
    return out


# --------------------------------------------------------------------------------------------
# Library installation (applied last: it needs every import the notebook uses)
# --------------------------------------------------------------------------------------------

MODULE_ALIASES = [("pd.", "import pandas as pd"), ("np.", "import numpy as np"),
                  ("plt.", "import matplotlib.pyplot as plt"), ("sns.", "import seaborn as sns"),
                  ("joblib.", "import joblib"), ("mlflow.", "import mlflow"),
                  ("lgb.", "import lightgbm as lgb")]
NAME_MODULES = {
    "Path": "pathlib",
    "ColumnTransformer": "sklearn.compose",
    "DummyClassifier": "sklearn.dummy", "DummyRegressor": "sklearn.dummy",
    "GradientBoostingRegressor": "sklearn.ensemble",
    "HistGradientBoostingClassifier": "sklearn.ensemble",
    "HistGradientBoostingRegressor": "sklearn.ensemble",
    "RandomForestClassifier": "sklearn.ensemble", "RandomForestRegressor": "sklearn.ensemble",
    "IterativeImputer": "sklearn.impute", "SimpleImputer": "sklearn.impute",
    "LogisticRegression": "sklearn.linear_model", "Ridge": "sklearn.linear_model",
    "accuracy_score": "sklearn.metrics", "average_precision_score": "sklearn.metrics",
    "brier_score_loss": "sklearn.metrics", "classification_report": "sklearn.metrics",
    "confusion_matrix": "sklearn.metrics", "f1_score": "sklearn.metrics",
    "mean_absolute_error": "sklearn.metrics",
    "mean_absolute_percentage_error": "sklearn.metrics",
    "mean_squared_error": "sklearn.metrics", "median_absolute_error": "sklearn.metrics",
    "precision_recall_curve": "sklearn.metrics", "r2_score": "sklearn.metrics",
    "recall_score": "sklearn.metrics", "roc_auc_score": "sklearn.metrics",
    "GridSearchCV": "sklearn.model_selection", "GroupKFold": "sklearn.model_selection",
    "GroupShuffleSplit": "sklearn.model_selection", "KFold": "sklearn.model_selection",
    "RandomizedSearchCV": "sklearn.model_selection",
    "StratifiedKFold": "sklearn.model_selection", "TimeSeriesSplit": "sklearn.model_selection",
    "cross_val_predict": "sklearn.model_selection", "cross_val_score": "sklearn.model_selection",
    "train_test_split": "sklearn.model_selection",
    "Pipeline": "sklearn.pipeline",
    "LabelEncoder": "sklearn.preprocessing", "OneHotEncoder": "sklearn.preprocessing",
    "OrdinalEncoder": "sklearn.preprocessing", "StandardScaler": "sklearn.preprocessing",
    "TargetEncoder": "sklearn.preprocessing",
    "ExponentialSmoothing": "statsmodels.tsa.holtwinters", "STL": "statsmodels.tsa.seasonal",
    "SARIMAX": "statsmodels.tsa.statespace.sarimax",
    "SARIMAXResults": "statsmodels.tsa.statespace.sarimax",
    "LGBMClassifier": "lightgbm", "LGBMRegressor": "lightgbm",
    "XGBClassifier": "xgboost", "XGBRegressor": "xgboost",
    "infer_signature": "mlflow.models",
}
_NAME_RE = re.compile(r"(?<![\w.])(" + "|".join(sorted(NAME_MODULES, key=len, reverse=True))
                      + r")\b")


def cell_imports(cell: Cell) -> list[str]:
    """The import statements a code cell needs, detected from the names it uses."""
    if cell.kind != "code":
        return []
    code_only = "\n".join(ln.split("#")[0] if not ln.lstrip().startswith(("%", "!")) else ""
                          for ln in cell.src.splitlines())
    out = [stmt for token, stmt in MODULE_ALIASES if token in code_only]
    for name in dict.fromkeys(_NAME_RE.findall(code_only)):
        if name == "IterativeImputer":
            out.append("from sklearn.experimental import enable_iterative_imputer")
        out.append(f"from {NAME_MODULES[name]} import {name}")
    return out


def _packages(c: Ctx, stmts: list[str], cells: list[Cell]) -> list[str]:
    mods = []
    for s in stmts:
        m = import_module(s)
        if m in PIP and m not in mods:
            mods.append(m)
    if any("read_parquet" in x.src for x in cells):
        mods.append("pyarrow")
    order = list(PIP)
    return sorted(set(mods), key=order.index)


def _seed_line(c: Ctx) -> str:
    return f"{c.seed} = {c.seed_value}" if not c.seed.isdigit() else ""


def _import_cell(c: Ctx, stmts: list[str], drop: str | None = None) -> Cell:
    if drop:
        stmts = [s for s in stmts if drop not in used_names([s])]
        stmts = [s if drop not in s else s for s in stmts]
        fixed = []
        for s in stmts:
            if s.startswith("from ") and drop in s.split(" import ")[1].split(", "):
                names = [n for n in s.split(" import ")[1].split(", ") if n != drop]
                if not names:
                    continue
                s = s.split(" import ")[0] + " import " + ", ".join(names)
            fixed.append(s)
        stmts = fixed
    text = render_imports(stmts)
    seed = _seed_line(c)
    if seed:
        text += "\n\n" + seed
    return Cell("code", text, {"imps"})


def _flatten_imports(stmts: list[str]) -> list[str]:
    """Split 'from m import a, b' into one statement per name."""
    out = []
    for s in stmts:
        if s.startswith("from "):
            mod, names = s.split(" import ")
            for n in names.split(", "):
                if f"{mod} import {n}" not in out:
                    out.append(f"{mod} import {n}")
        elif s not in out:
            out.append(s)
    return out


def collect_imports(cells: list[Cell]) -> list[str]:
    stmts: list[str] = []
    for x in cells:
        for s in _flatten_imports(cell_imports(x)):
            if s not in stmts:
                stmts.append(s)
    return stmts


def _nonstandard(stmts: list[str]) -> list[str]:
    return sorted({import_module(s) for s in stmts} & NON_STANDARD)


@variant("library_installation", "inst_pinned_setup", 3, cite=("inst", "imps"),
         marker="%pip install -q",
         why="{C_inst} install{s_inst} every third-party package the notebook uses with pinned "
             "versions ({pkgs}) and {c_imps} gathers all imports in one place{seed_note}, so a "
             "fresh kernel reproduces the environment.")
def inst_pinned(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    pk = _packages(c, stmts, cells)
    c.notes["pkgs"] = ", ".join(f"{PIP[m][0]}=={PIP[m][1]}" for m in pk)
    line = "%pip install -q " + " ".join(f"{PIP[m][0]}=={PIP[m][1]}" for m in pk)
    line = textwrap.fill(line, 96, break_long_words=False, subsequent_indent="    ")
    line = line.replace("\n", " \\\n")
    return [Cell("code", line, {"inst"}), _import_cell(c, stmts)]


@variant("library_installation", "inst_requirements_file", 3, cite=("inst", "imps"),
         marker="-r requirements.txt",
         why="{C_inst} write{s_inst} a pinned requirements.txt and install{s_inst} from it; "
             "{c_imps} imports everything the notebook uses up front{seed_note}, so the "
             "environment is explicit and reproducible.")
def inst_requirements(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    pk = _packages(c, stmts, cells)
    c.notes["pkgs"] = ", ".join(PIP[m][0] for m in pk)
    req = "%%writefile requirements.txt\n" + "\n".join(f"{PIP[m][0]}=={PIP[m][1]}" for m in pk)
    return [Cell("code", req, {"inst"}), Cell("code", "%pip install -q -r requirements.txt",
                                              {"inst"}), _import_cell(c, stmts)]


@variant("library_installation", "inst_unpinned_bang", 2, cite=("inst", "imps"),
         marker="!pip install",
         why="{C_inst} install{s_inst} the packages ({pkgs}) with an unpinned !pip, which may "
             "target a different environment than the kernel and gives different versions on "
             "every run; imports in {c_imps} are complete.")
def inst_unpinned(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    pk = _packages(c, stmts, cells)
    c.notes["pkgs"] = ", ".join(PIP[m][0] for m in pk)
    return [Cell("code", "!pip install " + " ".join(PIP[m][0] for m in pk), {"inst"}),
            _import_cell(c, stmts)]


@variant("library_installation", "inst_nonstandard_not_installed", 2, cite=("imps",),
         marker=lambda c: c.notes["ns_stmt"], ok=lambda c: bool(c.notes.get("has_nonstd")),
         why="{C_imps} import{s_imps} everything the notebook needs, but nothing installs the "
             "non-standard libraries ({nonstd}) or states their versions, so a fresh "
             "environment fails at the first import.")
def inst_none(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    cell = _import_cell(c, stmts)
    ns = _nonstandard(stmts)
    c.notes["nonstd"] = ", ".join(ns)
    c.notes["ns_stmt"] = next(ln for ln in cell.src.splitlines()
                              if ln.split() and ln.split()[1].split(".")[0] == ns[0])
    return [cell]


@variant("library_installation", "inst_scattered_imports", 2, cite=("inst", "scattered"),
         marker=lambda c: c.notes["scattered_stmt"],
         why="{C_inst} install{s_inst} unpinned packages, and the imports are scattered: "
             "{c_scattered} each import what they use at the point of use, so the notebook's "
             "dependencies are not visible in one place and a cell run out of order fails.")
def inst_scattered(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    pk = _packages(c, stmts, cells)
    c.notes["pkgs"] = ", ".join(PIP[m][0] for m in pk)
    seen: list[str] = []
    heads: list[str] = []
    for x in cells:
        if x.kind != "code":
            continue
        need = [s for s in _flatten_imports(cell_imports(x)) if s not in seen]
        if not need:
            continue
        seen += need
        head = render_imports(need)
        heads.append(head.splitlines()[0])
        if not x.roles & {"load"}:
            x.roles.add("scattered")
        if len(heads) == 1 and _seed_line(c):
            head += "\n" + _seed_line(c)
        x.src = head + "\n\n" + x.src
    c.notes["scattered_stmt"] = heads[1] if len(heads) > 1 else heads[0]
    return [Cell("code", "%pip install --quiet " + " ".join(PIP[m][0] for m in pk), {"inst"})]


MISSING_PREFERENCE = ["train_test_split", "mean_absolute_error", "roc_auc_score", "SimpleImputer",
                      "ColumnTransformer", "OneHotEncoder", "Pipeline", "GridSearchCV",
                      "accuracy_score", "r2_score", "StandardScaler", "mean_squared_error",
                      "cross_val_score", "SARIMAX", "ExponentialSmoothing", "TimeSeriesSplit"]


@variant("library_installation", "inst_missing_import", 1, cite=("imps", "uses_missing"),
         marker=lambda c: c.notes["missing"] + "(", ok=lambda c: bool(c.notes.get("can_miss")),
         absent=lambda c: "import:" + c.notes["missing"],
         why="{C_imps} import{s_imps} most names, but {missing} is never imported although "
             "{c_uses_missing} calls it, so a fresh top-to-bottom run stops with a NameError; "
             "nothing is installed or pinned either.")
def inst_missing(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    names = used_names(stmts)
    miss = next(n for n in MISSING_PREFERENCE if n in names and any(
        n + "(" in x.src for x in cells))
    c.notes["missing"] = miss
    for x in cells:
        if x.kind == "code" and miss + "(" in x.src:
            x.roles.add("uses_missing")
            break
    return [_import_cell(c, stmts, drop=miss)]


@variant("library_installation", "inst_wrong_package_late", 1, cite=("inst",),
         marker="pip install sklearn",
         why=lambda c: (
             "{C_inst} run{s_inst} \"pip install sklearn\", the deprecated placeholder package "
             "that fails to install instead of scikit-learn" + (
                 ", and {nonstd} is only installed in {c_late_install}, after it was already "
                 "imported" if c.notes.get("late") else "") + "; nothing is pinned."))
def inst_wrong(c: Ctx, cells: list[Cell], stmts: list[str]) -> list[Cell]:
    ns = _nonstandard(stmts)
    base = ["sklearn", "pandas", "numpy"] + (["matplotlib"] if any(
        import_module(s) == "matplotlib" for s in stmts) else [])
    late = [m for m in ns if m in {"xgboost", "lightgbm", "statsmodels"}]
    early = [PIP[m][0] for m in ns if m not in late]
    inst = Cell("code", "!pip install " + " ".join(base + early), {"inst"})
    if late:
        pkg = PIP[late[0]][0]
        c.notes["late"] = "1"
        c.notes["nonstd"] = pkg
        for x in cells:
            if x.kind == "code" and "train" in x.roles:
                x.src = f"!pip install {pkg}\n" + x.src
                x.roles.add("late_install")
                break
    return [inst, _import_cell(c, stmts)]


# --------------------------------------------------------------------------------------------
# Rationales: role references and domain words
# --------------------------------------------------------------------------------------------


def cell_ref(nums: list[int], capital: bool = False) -> str:
    nums = sorted(set(nums))
    if len(nums) == 1:
        text = f"cell {nums[0]}"
    elif len(nums) == 2:
        text = f"cells {nums[0]} and {nums[1]}"
    elif nums == list(range(nums[0], nums[-1] + 1)):
        text = f"cells {nums[0]}-{nums[-1]}"
    else:
        text = "cells " + ", ".join(str(n) for n in nums[:-1]) + f" and {nums[-1]}"
    return text[0].upper() + text[1:] if capital else text


class Refs(dict):
    """format_map mapping: {c_role}/{C_role} -> cell references, {s_role} -> verb 's'."""

    def __init__(self, roles: dict[str, list[int]], words_: dict[str, str]):
        super().__init__()
        self.roles = roles
        self.words = words_

    def __missing__(self, key: str) -> str:
        for prefix in ("c_", "C_", "s_", "ies_"):
            if key.startswith(prefix):
                role = key[len(prefix):]
                nums = self.roles.get(role)
                if not nums:
                    raise KeyError(f"rationale cites role {role!r} that no cell has")
                single = len(set(nums)) == 1
                if prefix == "s_":
                    return "s" if single else ""
                if prefix == "ies_":
                    return "ies" if single else "y"
                return cell_ref(nums, capital=prefix == "C_")
        if key in self.words:
            return self.words[key]
        raise KeyError(f"unknown rationale token {key!r}")


def domain_words(c: Ctx, roles: dict[str, list[int]]) -> dict[str, str]:
    d = c.d
    nxt = "modelling"
    for slot_role, word in (("imp", "handling missing values"), ("fe", "building features"),
                            ("split", "splitting the data")):
        if roles.get(slot_role):
            nxt = word
            break
    leak = d.leak or ("", "", None)
    skipped = []
    if c.new_imp_pre or c.new_imp_post:
        skipped.append("the missing-value handling")
    if c.fe_func:
        skipped.append(f"{c.fe_func}()")
    elif c.fe_lines:
        skipped.append("the feature lines")
    if c.new_enc:
        skipped.append("the category encoding")
    words_ = {
        "target": d.target, "miss": words(d.miss_num + d.miss_cat), "miss_why": d.miss_why,
        "are_miss": "are" if len(d.miss_num + d.miss_cat) > 1 else "is",
        "model": c.fam.name, "leak": leak[0], "leak_why": leak[1], "hicard": d.hicard or "",
        "new_desc": d.new_desc, "out_file": d.out_file, "id_col": d.id or "",
        "fe3": words(d.fe3_num + d.fe3_cat), "fe2": words(d.fe2_num),
        "fe3_hint": words([x for x in d.fe3_num + d.fe3_cat if x not in d.fe2_num][:3]),
        "cats": words(d.cat),
        "gcol": d.group_imp[0] if d.group_imp else "",
        "gby": d.group_imp[1] if d.group_imp else "",
        "rate": f"{d.pos_rate:.0%}" if d.pos_rate else "",
        "acc_trivial": f"{1 - d.pos_rate:.0%}" if d.pos_rate else "",
        "seg": d.cat[0] if d.cat else "", "unit": d.unit or "target units",
        "H": str(d.horizon), "freq_word": d.freq_word, "S": str(naive_lag(d)) if d.season else "",
        "S0": str(d.season), "lags": words([str(x) for x in d.lags]), "exog": words(d.exog),
        "adj": _adjective(d) if d.freq else "",
        "exp": c.d.title.lower().replace(" ", "-"), "next_step": nxt,
        "sig_note": "" if c.path == "stats" else " with a signature and an input example",
        "thr_note": (", and it outputs bare probabilities without a decision threshold"
                     if c.cls else ""),
        "skipped": words(skipped) or "the preparation steps",
        "seed_note": " and fixes the random seed" if _seed_line(c) and c.path != "stats" else "",
        "baseline_note": "" if c.variants.get("metrics_evaluation") in BASELINE_METRICS else (
            ", and no model is compared with a naive baseline"),
    }
    words_.update({k: v for k, v in c.notes.items() if isinstance(v, str)})
    return words_


# --------------------------------------------------------------------------------------------
# Building one notebook
# --------------------------------------------------------------------------------------------

LEVEL_WEIGHTS = {
    "library_installation": {3: 0.3, 2: 0.45, 1: 0.25},
    "exploratory_data_analysis": {3: 0.35, 2: 0.4, 1: 0.25},
    "data_imputation": {3: 0.3, 2: 0.3, 1: 0.4},
    "feature_engineering": {3: 0.35, 2: 0.35, 1: 0.3},
    "model_training": {3: 0.3, 2: 0.35, 1: 0.35},
    "model_use": {3: 0.3, 2: 0.35, 1: 0.35},
    "metrics_evaluation": {3: 0.35, 2: 0.35, 1: 0.3},
    "mlflow_logging": {NA: 0.25, 3: 0.25, 2: 0.25, 1: 0.25},
    "cell_organization": {3: 0.35, 2: 0.4, 1: 0.25},
}

MLFLOW_ASKS = [" Track the experiment in MLflow.", " Log the runs to MLflow.",
               " Please log parameters, metrics and the model to MLflow.",
               " We use MLflow for experiment tracking."]


class Deck:
    """Levels for one dimension, drawn so that the overall spread follows the weights."""

    def __init__(self, weights: dict, n: int, rng: random.Random):
        cards: list = []
        for level, w in weights.items():
            cards += [level] * round(w * n)
        while len(cards) < n:
            cards.append(max(weights, key=lambda k: weights[k]))
        rng.shuffle(cards)
        self.cards = cards

    def draw(self, allowed: Callable[[int | str], bool]) -> int | str | None:
        for i, level in enumerate(self.cards):
            if allowed(level):
                return self.cards.pop(i)
        return None


@dataclass
class Spec:
    nb_id: str
    d: Domain
    path: str
    fam: str
    prompt: str
    seed: int


def make_ctx(spec: Spec, rng: random.Random) -> Ctx:
    d = spec.d
    names = rng.choice(NAME_STYLES)
    lists = rng.choice([("num_cols", "cat_cols", "features"),
                        ("numeric_features", "categorical_features", "feature_cols"),
                        ("NUM_COLS", "CAT_COLS", "FEATURES")])
    seed_value = rng.choice([42, 0, 7, 13, 2024, 123, 1])
    seed = rng.choice(["SEED", "RANDOM_STATE", str(seed_value)])
    if spec.path == "stats":
        seed = str(seed_value)  # nothing random in a statistical forecast
    model = rng.choice(["model", "best_model", "final_model",
                        "clf" if d.task == "classification" else "reg"])
    c = Ctx(
        nb_id=spec.nb_id, d=d, fam=FAMILIES[spec.fam], path=spec.path, rng=rng,
        df=rng.choice(["df", "data", "frame", f"{d.key}_df"]), model=model,
        NUM=lists[0], CAT=lists[1], FEATS=lists[2],
        new=rng.choice(["new_df", "new_data", "to_score", "incoming_df"]),
        seed=seed, seed_value=seed_value, test_size=rng.choice(["0.2", "0.25", "0.3"]),
        prompt=spec.prompt, **names)
    c.ser = rng.choice(["y", "series", "ts"])
    c.train_df, c.test_df = rng.choice([("train_df", "test_df"), ("train_part", "test_part")])
    return c


def load_cells(c: Ctx) -> list[Cell]:
    d = c.d
    cells = [code(d.load[c.rng.randrange(2)].replace("{df}", c.df), "load")]
    if c.path == "stats":
        if d.series:
            body = (f'{c.ser} = {c.df}.groupby("{d.date}")[{c.T}].sum(min_count=1)'
                    f'.asfreq("{d.freq}")')
        else:
            body = f'{c.ser} = {c.df}.set_index("{d.date}")[{c.T}].asfreq("{d.freq}")'
        body += f'\nprint({c.ser}.index.min(), "->", {c.ser}.index.max(), len({c.ser}))'
        cells.append(code(body, "load"))
    return cells


def title_cells(c: Ctx) -> tuple[Cell, Cell]:
    d = c.d
    goal = {"classification": f"predicting {d.target_desc}",
            "regression": f"predicting {d.target_desc}",
            "forecasting": f"forecasting {d.target_desc}"}[d.task]
    title = Cell("markdown", f"# {d.title}: {goal}", {"title"})
    intro = Cell("markdown", f"**Request.** {c.prompt}\n\nData: {', '.join(d.files)}.",
                 {"intro"}, [], True)
    return title, intro


def pick_variant(c: Ctx, dim: str, level, usage: Counter) -> Variant | None:
    options = [v for v in REG[dim].values()
               if v.score == level and c.path in v.paths and (v.ok is None or v.ok(c))]
    if dim == "cell_organization":  # keep every notebook between 8 and 40 cells
        options = [v for v in options if 8 <= len(v.fn(c, list(c.placed))) <= 40]
    if not options:
        return None
    low = min(usage[(dim, v.name)] for v in options)
    best = [v for v in options if usage[(dim, v.name)] == low]
    return c.rng.choice(sorted(best, key=lambda v: v.name))


def choose(c: Ctx, dim: str, decks: dict[tuple[str, str], Deck], usage: Counter,
           forced: int | str | None = None) -> Variant:
    if forced is not None:
        v = pick_variant(c, dim, forced, usage)
        assert v, (c.nb_id, dim, forced)
    else:
        holder: dict[str, Variant] = {}

        def allowed(level) -> bool:
            v = pick_variant(c, dim, level, usage)
            if v:
                holder["v"] = v
            return v is not None

        level = decks[(dim, c.path)].draw(allowed)
        assert level is not None, (c.nb_id, dim)
        v = holder["v"] if holder["v"].score == level else pick_variant(c, dim, level, usage)
    usage[(dim, v.name)] += 1
    c.variants[dim] = v.name
    return v


def run(v: Variant, c: Ctx, slots: dict[str, list[Cell]]) -> None:
    for slot, cells in v.fn(c).items():
        slots[slot].extend(cells)


def build(spec: Spec, decks: dict[tuple[str, str], Deck],
          usage: Counter) -> tuple[dict, list[dict], dict]:
    rng = random.Random(f"{SEED}-{spec.nb_id}")
    c = make_ctx(spec, rng)
    d = c.d
    slots: dict[str, list[Cell]] = {s: [] for s in SLOTS}
    chosen_v: dict[str, Variant] = {}
    slots["load"] = load_cells(c)
    # feature engineering is chosen before imputation (imputation depends on the encoding) but
    # generated after it (the preprocessing pipeline includes the imputer)
    fe_forced = NA if c.path == "stats" else None
    imp_forced = NA if not d.has_missing else None
    chosen_v["feature_engineering"] = choose(c, "feature_engineering", decks, usage, fe_forced)
    chosen_v["data_imputation"] = choose(c, "data_imputation", decks, usage, imp_forced)
    for dim in ("data_imputation", "feature_engineering"):
        run(chosen_v[dim], c, slots)
    for dim in ("model_training", "metrics_evaluation", "mlflow_logging", "model_use",
                "exploratory_data_analysis"):
        chosen_v[dim] = choose(c, dim, decks, usage)
        run(chosen_v[dim], c, slots)
    # the request mentions MLflow when the notebook is expected to use it
    ml = chosen_v["mlflow_logging"].name
    if ml == "ml_requested_but_missing" or (ml != "ml_not_used" and rng.random() < 0.5):
        c.prompt = spec.prompt + rng.choice(MLFLOW_ASKS)
    title, intro = title_cells(c)
    slots["title"], slots["intro"] = [title], [intro]
    placed: Placed = [(s, x) for s in SLOTS for x in slots[s]]
    # library installation: needs the imports of every cell
    body_cells = [x for _, x in placed if x.kind == "code"]
    stmts = collect_imports(body_cells)
    c.notes["has_nonstd"] = "1" if _nonstandard(stmts) else ""
    c.notes["can_miss"] = "1" if any(n in used_names(stmts) and any(
        n + "(" in x.src for x in body_cells) for n in MISSING_PREFERENCE) else ""
    v_inst = choose(c, "library_installation", decks, usage)
    chosen_v["library_installation"] = v_inst
    inst_cells = v_inst.fn(c, body_cells, stmts)
    placed = [placed[0]] + [("install", x) for x in inst_cells] + placed[1:]
    # intro goes after the title, before setup
    placed = sorted(placed, key=lambda p: (SLOTS.index(p[0]) if p[0] != "install" else 1.5))
    c.placed = placed
    v_org = choose(c, "cell_organization", decks, usage)
    chosen_v["cell_organization"] = v_org
    cells = v_org.fn(c, placed)
    return finish(c, spec, cells, chosen_v)


def absent_found(absent: str, sources: list[str]) -> bool:
    """True if ``absent`` occurs: "import:NAME" means an import statement binding NAME."""
    if absent.startswith("import:"):
        name = absent.split(":", 1)[1]
        pattern = re.compile(rf"^\s*(from \S+ )?import .*\b{re.escape(name)}\b", re.M)
        return any(pattern.search(src) for src in sources)
    return any(absent in src for src in sources)


def finish(c: Ctx, spec: Spec, cells: list[Cell], chosen_v: dict[str, Variant]):
    roles: dict[str, list[int]] = {}
    for i, x in enumerate(cells, start=1):
        for r in x.roles:
            roles.setdefault(r, []).append(i)
    words_ = domain_words(c, roles)
    recipe_dims, labels = {}, []
    for dim in DIMENSIONS:
        v = chosen_v[dim]
        marker = v.marker(c) if callable(v.marker) else v.marker
        cite_roles = dict(roles)
        if marker and "@marker" in v.cite:
            cite_roles["mk"] = [i for i, x in enumerate(cells, start=1) if marker in x.src]
        cited: list[int] = []
        for r in v.cite:
            key = "mk" if r == "@marker" else r
            cited += cite_roles.get(key, [])
        cited = sorted(set(cited))
        why = v.why(c) if callable(v.why) else v.why
        rationale = why.format_map(Refs(cite_roles, words_))
        if marker:
            assert any(marker in cells[n - 1].src for n in cited), (c.nb_id, dim, marker, cited)
        absent = v.absent(c) if callable(v.absent) else v.absent
        entry = {"score": v.score, "variant": v.name, "marker": marker, "cells": cited}
        if absent:
            entry["absent"] = absent
            assert not absent_found(absent, [x.src for x in cells]), (c.nb_id, dim, absent)
        recipe_dims[dim] = entry
        labels.append({"item_id": c.nb_id,
                       "inputs": {"notebook": {"path": f"notebooks/{c.nb_id}.ipynb"},
                                  "task": c.prompt},
                       "dimension": dim, "score": v.score, "rationale": rationale,
                       "rater": "reference"})
    nb = to_notebook(cells)
    recipe = {"id": c.nb_id, "domain": c.d.key, "task_type": c.d.task,
              "approach": {"tab": "tabular", "ml": "features", "stats": "statistical"}[c.path],
              "model_family": c.fam.key, "task": c.prompt, "n_cells": len(cells),
              "est_tokens": len(render(nb)) // 4, "dimensions": recipe_dims}
    return nb, labels, recipe


def to_notebook(cells: list[Cell]) -> nbformat.NotebookNode:
    out = []
    for i, x in enumerate(cells, start=1):
        cell = {"cell_type": x.kind, "id": f"cell-{i:02d}", "metadata": {}, "source": x.src}
        if x.kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return nbformat.from_dict({
        "cells": out,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python", "version": "3.11"}},
        "nbformat": 4, "nbformat_minor": 5})


def render(nb: nbformat.NotebookNode) -> str:
    """The judge's view: cells with '# [cell N, kind]' markers (outputs are empty here)."""
    return "\n\n".join(f"# [cell {i}, {x.cell_type}]\n{x.source.rstrip()}"
                       for i, x in enumerate(nb.cells, start=1))


# --------------------------------------------------------------------------------------------
# The whole set
# --------------------------------------------------------------------------------------------


def specs(rng: random.Random) -> list[Spec]:
    out: list[Spec] = []
    cls_f = ["logreg", "rf_c", "hgb_c", "xgb_c", "lgbm_c"]
    reg_f = ["ridge", "rf_r", "hgb_r", "xgb_r", "lgbm_r", "gbr"]
    ml_f = ["hgb_r", "lgbm_r", "ridge"]
    cycles = {key: rng.sample(fams, len(fams)) for key, fams in
              (("cls", cls_f), ("reg", reg_f), ("ml", ml_f))}
    used = Counter()

    def next_family(key: str) -> str:
        fam = cycles[key][used[key] % len(cycles[key])]
        used[key] += 1
        return fam

    k = 0
    for d in DOMAINS:
        if d.task == "forecasting":
            paths = ["ml", "ml", "ml", "stats", "stats"]
            rng.shuffle(paths)
        else:
            paths = ["tab"] * N_PER_DOMAIN
        prompts = list(d.prompts)
        agg = list(d.agg_prompts)
        for i, path in enumerate(paths):
            k += 1
            if path == "tab":
                fam = next_family("cls" if d.task == "classification" else "reg")
                prompt = prompts[i]
            elif path == "ml":
                fam = next_family("ml")
                prompt = prompts.pop(0)
            else:
                fam = "ets" if d.season > 24 else rng.choice(["sarimax", "ets", "sarimax"])
                prompt = agg.pop(0)
            out.append(Spec("", d, path, fam, prompt, k))
    rng.shuffle(out)
    for i, s in enumerate(out, start=1):
        s.nb_id = f"nb-{i:03d}"
    return sorted(out, key=lambda s: s.nb_id)


def generate() -> tuple[dict[str, nbformat.NotebookNode], list[dict], list[dict]]:
    rng = random.Random(SEED)
    all_specs = specs(rng)
    # one deck per dimension and approach, so that every kind of notebook gets a spread
    by_path = Counter(s.path for s in all_specs)
    decks = {(dim, path): Deck(w, k, random.Random(f"{SEED}-{dim}-{path}"))
             for dim, w in LEVEL_WEIGHTS.items() for path, k in sorted(by_path.items())}
    # N/A of imputation and feature engineering is decided by the data, not drawn
    usage: Counter = Counter()
    notebooks, labels, recipes = {}, [], []
    for spec in all_specs:
        nb, lab, rec = build(spec, decks, usage)
        notebooks[spec.nb_id] = nb
        labels += lab
        recipes.append(rec)
    return notebooks, labels, recipes


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


def percentile(values: list[int], p: float) -> int:
    s = sorted(values)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo))


def dataset_card(notebooks: dict, labels: list[dict], recipes: list[dict]) -> str:
    n = len(recipes)
    toks = [len(render(nb)) / 4 for nb in notebooks.values()]
    toks_i = [int(t) for t in toks]
    cells = [len(nb.cells) for nb in notebooks.values()]
    dist: dict[str, Counter] = {dim: Counter() for dim in DIMENSIONS}
    for lab in labels:
        dist[lab["dimension"]][str(lab["score"])] += 1
    rows = ["| dimension | 1 | 2 | 3 | N/A |", "| --- | ---: | ---: | ---: | ---: |"]
    for dim in DIMENSIONS:
        ct = dist[dim]
        rows.append(f"| {dim} | {ct['1']} | {ct['2']} | {ct['3']} | {ct[NA]} |")
    tasks = Counter(r["task_type"] for r in recipes)
    approach = Counter(r["approach"] for r in recipes)
    doms = Counter((r["domain"], r["task_type"]) for r in recipes)
    dom_rows = ["| domain | task type | notebooks | data files |", "| --- | --- | ---: | --- |"]
    for d in DOMAINS:
        dom_rows.append(f"| {d.title} (`{d.key}`) | {d.task} | {doms[(d.key, d.task)]} | "
                        f"{', '.join(d.files)} |")
    fams = Counter(r["model_family"] for r in recipes)
    variants = {dim: sorted({r["dimensions"][dim]["variant"] for r in recipes})
                for dim in DIMENSIONS}
    var_lines = [f"- `{dim}` ({len(v)}): " + ", ".join(f"`{x}`" for x in v)
                 for dim, v in variants.items()]
    return f"""# ml_notebooks: generated ML notebooks with reference labels

{n} Jupyter notebooks (nbformat 4) of the kind a code-generation agent writes when a user asks
for a machine-learning analysis ("predict which flights will be delayed tomorrow from these
tables"), each labelled on the nine dimensions of the `ml_notebook` rubric
(`signatures/ml_notebook.toml`): {", ".join(f"`{d}`" for d in DIMENSIONS)}.

## How the data was made

**Everything here is synthetic and was generated by this project.** The notebooks are written by
`datasets/ml_notebooks_build/build.py` (not package data; `python
datasets/ml_notebooks_build/build.py` rewrites this folder, `--check` verifies that the committed
files equal a fresh run). Generation is deterministic (fixed seeds).

- Each notebook is composed from per-dimension code/markdown *fragments*. Every fragment
  (a *variant*) has a quality level (1, 2, 3 or N/A) and is written separately for tabular
  classification/regression, forecasting with lag features and statistical forecasting, using
  the domain's own tables and column names. Across all dimensions there are
  {sum(len(v) for v in REG.values())} variants; the ones used here are listed below.
- A *recipe* per notebook (`recipes.jsonl`) fixes the domain, the user's request, the model
  family, naming style (variable names, seed, test size) and the variant of every dimension.
  Levels are drawn per dimension from a deck with a fixed spread, independently of the other
  dimensions; variants are then picked among those compatible with the rest of the notebook
  (e.g. a group-median imputer needs the grouping column to survive encoding), preferring the
  least used so far.
- **Labels are reference labels derived from the recipes, not a survey of human raters.** The
  score of each (notebook, dimension) is the level of the variant used; the rationale is written
  from the variant, as an expert reviewer would, and cites the cells (numbered from 1 over all
  cells, markdown included, as in the rendered `# [cell N, kind]` view) where that variant's code
  ended up. `recipes.jsonl` also keeps, per dimension, a `marker` string that must occur in one
  of the cited cells (and, for "missing" variants, an `absent` string that must not occur);
  `tests/test_datasets.py` checks this for every label.
- Code is meant to be read, not run: it refers to data files that are not shipped, and the
  notebooks have no outputs. It is written to be internally consistent (the variables and
  columns used exist, metrics fit the task unless the recipe makes them wrong on purpose).
  Deliberate defects (a missing import, a cell that runs before the cell defining its input,
  leakage that runs without error) are recorded in the recipe.
- The failures include the subtle ones that human experts catch and LLM judges tend to miss:
  imputers and target encodings fitted before the split, interpolation that uses future values,
  hyper-parameters or early stopping chosen on the test set, the model refitted on the test
  rows, a random split of time series, accuracy on a 1% positive class, MAPE on a target with
  zeros, MLflow calls that record nothing useful, scoring code that refits a fresh model instead
  of loading the saved one or forecasts from the end of the training window.

## Files

- `notebooks/nb-001.ipynb` ... `nb-{n:03d}.ipynb`: the notebooks.
- `labels.jsonl`: one line per (notebook, dimension), {len(labels)} lines:
  `item_id`, `inputs` (`notebook` as a path relative to this folder, `task` = the user's
  request), `dimension`, `score` (1, 2, 3 or "N/A"), `rationale`, `rater` = "reference".
- `recipes.jsonl`: one line per notebook: `id`, `domain`, `task_type`, `approach`
  (tabular / features / statistical), `model_family`, `task`, `n_cells`, `est_tokens`, and per
  dimension `score`, `variant`, `marker`, `cells` (and `absent` where it applies).

## Score distribution (computed from labels.jsonl)

{chr(10).join(rows)}

N/A is used where the dimension does not apply: data without missing values whose absence the
notebook checks (`data_imputation`), univariate statistical forecasts without features
(`feature_engineering`), and notebooks that neither use MLflow nor were asked to
(`mlflow_logging`).

## Task types, domains and models

Task types: {", ".join(f"{k} {v}" for k, v in sorted(tasks.items()))}; approaches:
{", ".join(f"{k} {v}" for k, v in sorted(approach.items()))}.

{chr(10).join(dom_rows)}

Model families: {", ".join(f"`{k}` {v}" for k, v in sorted(fams.items()))}.

Variants used per dimension:

{chr(10).join(var_lines)}

## Size

Rendered as the judge sees it (cells joined with `# [cell N, kind]` markers, no outputs),
**estimated** tokens = characters / 4 (an estimate, not a tokenizer count):
min {min(toks_i)}, median {int(statistics.median(toks))}, p90 {percentile(toks_i, 0.9)},
max {max(toks_i)}. Cells per notebook: min {min(cells)}, median {int(statistics.median(cells))},
max {max(cells)}.

## Intended use and limitations

- Intended for developing and testing judge alignment (e.g. MemAlign) on a rubric with
  several dimensions, N/A, and cell-citing rationales, within the context of a small local
  model; and for regression tests of loaders, rendering and metrics.
- The labels encode the rubric as this project's authors apply it; they are not independent
  human judgements, carry no inter-rater disagreement and will make a judge look better aligned
  than it would be with real experts. Use the `conala` set for real human grades.
- Notebooks are composed from a finite set of fragments: two notebooks may share a fragment
  design (with different domain, names and neighbouring code), so a judge that memorises
  fragments can look better than it is. No two notebooks share more than half of their code
  cells verbatim (tested).
- Every defect is local to the dimension it labels; real notebooks mix problems in messier
  ways, and real outputs (tracebacks, printed metrics) are absent.
"""


def write_all(out: Path) -> dict[str, str]:
    notebooks, labels, recipes = generate()
    files: dict[str, str] = {}
    for nb_id, nb in notebooks.items():
        nbformat.validate(nb)
        files[f"notebooks/{nb_id}.ipynb"] = nbformat.writes(nb) + "\n"
    files["labels.jsonl"] = jsonl(labels)
    files["recipes.jsonl"] = jsonl(recipes)
    files["DATASET.md"] = dataset_card(notebooks, labels, recipes)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk instead of writing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    files = write_all(args.out)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).is_file()
                 or (args.out / name).read_text(encoding="utf-8") != text]
        extra = sorted(p.name for p in (args.out / "notebooks").glob("*.ipynb")
                       if f"notebooks/{p.name}" not in files)
        if stale or extra:
            print("out of date:", ", ".join(stale + extra))
            return 1
        print(f"{len(files)} files up to date")
        return 0
    (args.out / "notebooks").mkdir(parents=True, exist_ok=True)
    for old in (args.out / "notebooks").glob("*.ipynb"):
        if f"notebooks/{old.name}" not in files:
            old.unlink()
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
