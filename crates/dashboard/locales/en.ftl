# The dashboard's English messages: the reference every other language must match id for id
# (a unit test in src/i18n.rs checks it). Model names and descriptions are not translated.

## Shell
nav-skip = Skip to content
nav-main = Main
nav-dashboard = Dashboard
nav-runs = Runs
nav-models = Models
nav-docs = Docs
nav-keys = API Keys
nav-credits = Credits
nav-account = Account settings
nav-logout = Log out
nav-login = Log in
nav-signup = Sign up
nav-language = Language
nav-error-codes = Error codes
nav-rate-limits = Rate limits
nav-support = Support
copy = Copy
copied = Copied
yes = yes
no = no
badge-test = test

## Error page
error-title = Error
error-code = Error code
error-support = If this keeps happening, write to
error-back = Back to the dashboard

## Models
models-title = Models
models-search = Search
models-search-placeholder = name, provider, task
models-tag = Tags
models-all-tags = All tags
models-count = { $shown } of { $total } models
models-test-only = test keys only here
models-none = No model matches.
models-show-all = Show all
price-per-run = per run
price-per-unit = per unit of { $field }
price-option = Option
price-amount = Price
price-other = any other value
price-any = any input
schema-field = Field
schema-type = Type
schema-required = Required
schema-default = Default
schema-allowed = Allowed
schema-description = Description
model-id = ID
model-test-only = No provider is configured for this model on this server: it runs in test mode only (simulated, free).
model-examples = Examples
model-example-use = Use this example
model-quickstart = Quick start
model-key-in-examples = Key in the examples
model-key-env = $RUNBASE_API_KEY (environment variable)
model-key-use = Use
model-step-create = 1. Create a run; the answer is the run, with status "pending":
model-step-poll = 2. Poll it every 1–2 seconds until status is "succeeded" (or "failed"), then read output.urls:
model-price = Price
model-input = Input
model-output = Output
model-errors = Errors

## Playground
pg-title = Playground
pg-required = required
pg-image-url = Image URL
pg-add-url = Add a URL
pg-upload = Upload images
pg-upload-limits = Up to { $count } images, { $mb } MB each.
pg-upload-limit-size = Up to { $mb } MB each.
pg-json-field = JSON value.
pg-test-mode = Test mode
pg-test-mode-help = Simulated output, never charged.
pg-test-only = Only test mode can run this model here.
pg-price-label = Price:
pg-price = { $price } per run, charged to your balance
pg-price-test = { $price } per run; free in test mode
pg-run = Run
pg-login-to-run = Log in to run
pg-output = Output
pg-output-empty = Run the model to see its output here.
pg-recent = Your recent runs
pg-recent-empty = No playground runs of this model yet.
pg-curl = Copy as curl
pg-remove = Remove
pg-too-many = At most {"{"}n{"}"} images.
pg-too-large = larger than {"{"}mb{"}"} MB.
pg-uploading = Uploading
pg-uploaded = Uploaded
pg-upload-failed = upload failed.
pg-preview-alt = Preview of the image
pg-output-alt = Output
pg-download = Download file
pg-poll-failed = The run's status could not be read
pg-starting = Starting the run…
