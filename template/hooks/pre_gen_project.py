"""Validate the answers before anything is written (cookiecutter runs this; exit 1 aborts the bake).

Each error names the question, so `--no-input key=value` mistakes are fixed in one go.
"""

import json
import re
import sys
from urllib.parse import urlparse

ANSWERS = json.loads({{ cookiecutter | jsonify | tojson }})
LABEL = re.compile(r"^[A-Za-z0-9_\-]+$")  # what params.yaml prepare.label_regex captures after the label prefix
PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9 _\-]*$")  # 'Category', 'Route', 'Next step': the ':' is added
errors = []

slug = ANSWERS["project_slug"]
if not re.fullmatch(r"[a-z][a-z0-9\-]*", slug):
    errors.append(f"project_slug {slug!r}: use lowercase letters, digits and '-', starting with a letter")
labels = [label.strip() for label in ANSWERS["labels"].split(",") if label.strip()]
if len(labels) < 2:
    errors.append(f"labels {ANSWERS['labels']!r}: give at least two labels, comma-separated")
if len(set(labels)) != len(labels):
    errors.append(f"labels {ANSWERS['labels']!r}: a label is repeated")
for label in labels:
    if not LABEL.match(label):
        errors.append(f"labels: {label!r} may only use letters, digits, '_' and '-'")
prefixes = {key: ANSWERS[key].strip() for key in ("label_prefix", "detail_prefix")}
for key, prefix in prefixes.items():
    if not PREFIX.match(prefix):
        errors.append(f"{key} {ANSWERS[key]!r}: one or a few words (letters, digits, spaces, _ and -; "
                      "no ':', which the answer format adds)")
if prefixes["label_prefix"].lower() == prefixes["detail_prefix"].lower():
    errors.append(f"detail_prefix {ANSWERS['detail_prefix']!r}: must differ from label_prefix (the label is read "
                  "from the line after the label prefix)")
for key in ("domain_name", "domain_description"):
    if not ANSWERS[key].strip() or "\n" in ANSWERS[key]:
        errors.append(f"{key}: must be one non-empty line")
for key, ok, allowed in (("gate_domain_min", lambda v: 0 <= v <= 1, "between 0 and 1"),
                         ("gate_regression_min_ratio", lambda v: 0 < v <= 1, "a ratio in (0, 1], e.g. 0.95")):
    if not ANSWERS[key]:
        continue  # empty = keep the template's params.yaml value
    try:
        if not ok(float(ANSWERS[key])):
            errors.append(f"{key} {ANSWERS[key]!r}: must be {allowed}")
    except ValueError:
        errors.append(f"{key} {ANSWERS[key]!r}: not a number")
for key in ("judge_base_url", "mlflow_tracking_uri", "dvc_remote_url"):
    url = urlparse(ANSWERS[key])
    if url.username or url.password:
        errors.append(f"{key}: no credentials in URLs (they would be committed); use the environment instead")
judge = urlparse(ANSWERS["judge_base_url"])
if ANSWERS["judge_base_url"] and judge.scheme not in ("http", "https"):
    errors.append(f"judge_base_url {ANSWERS['judge_base_url']!r}: expected an http(s)://.../v1 URL or empty")
elif judge.scheme == "http" and not (judge.hostname in ("localhost", "::1") or re.fullmatch(r"127(\.\d+){3}", judge.hostname or "")):
    # the same rule as params.yaml's judge.base_url (llmops.config.check_url): the bearer key would cross the
    # network in clear text
    errors.append(f"judge_base_url {ANSWERS['judge_base_url']!r}: plain http:// would send the API key in clear "
                  "text; use https:// (http only for a loopback host such as 127.0.0.1)")
if ANSWERS["judge_model"] and not ANSWERS["judge_base_url"] and ANSWERS["judge_model"] not in ("base", "tuned"):
    # without an endpoint the judge stage serves this project's own models (llmops.serve), which answer only to
    # 'base' and 'tuned': any other name would fail the judge stage minutes into the first `make demo`
    errors.append(f"judge_model {ANSWERS['judge_model']!r}: with judge_base_url empty the judge is served locally "
                  "and can only be 'base' or 'tuned'; give judge_base_url for another model, or leave judge_model empty")
if ANSWERS["dvc_remote_url"] and not urlparse(ANSWERS["dvc_remote_url"]).scheme and not ANSWERS["dvc_remote_url"].startswith("/"):
    errors.append(f"dvc_remote_url {ANSWERS['dvc_remote_url']!r}: expected e.g. s3://bucket/path or an absolute path")

if errors:
    print("Cannot generate the project:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
