// The config form and the pause button: PATCH /api/config, and a refused change shown next to its field.
// A change refused for want of the token (401) asks for it in the page, then is sent again with it.
import { patchConfig } from "./api.js";
import { TokenPrompt, token } from "./token.js";

const FIELDS = ["rate_hz", "min", "max"];
const describe = (changes) => Object.keys(changes).map((k) => `${k} = ${changes[k]}`).join(", ");

export class ConfigForm {
  constructor(form, pauseButton, onApplied, tokenForm) {
    this.form = form;
    this.pause = pauseButton;
    this.onApplied = onApplied;
    this.pending = null; // the change a 401 held back, sent again once a token is entered
    this.prompt = new TokenPrompt(tokenForm, () => {
      if (this.pending) this.send(this.pending);
      else this.message("Token kept for this tab.");
    });
    this.config = null; // the server's config, as last seen
    this.shown = {}; // what this page last wrote into each input, so a user's edit is never overwritten
    for (const name of FIELDS) this.shown[name] = form.elements[name].value;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    pauseButton.addEventListener("click", () => this.togglePause());
  }

  /** Ask for the token before any change when the control-plane needs one and this tab has none. */
  needToken(auth) {
    if (auth === "token" && !token.get() && !this.prompt.shown) {
      this.prompt.ask("Changes need this control-plane's token (its CONTROL_TOKEN). Enter it once: this tab keeps it.");
    }
  }

  /** Follow the server's config; inputs the user is editing are left alone. */
  update(config) {
    this.config = config;
    for (const name of FIELDS) {
      const input = this.form.elements[name];
      const edited = input.value !== this.shown[name] || document.activeElement === input;
      if (!edited) {
        input.value = String(config[name]);
        this.shown[name] = input.value;
      }
    }
    this.pause.setAttribute("aria-pressed", String(config.paused));
    this.pause.textContent = config.paused ? "Resume publishing" : "Pause publishing";
  }

  async submit() {
    this.clearErrors();
    const changes = {};
    for (const name of FIELDS) {
      const input = this.form.elements[name];
      if (input.value.trim() === "" || !Number.isFinite(Number(input.value))) {
        this.showError(name, "Enter a number.");
        return;
      }
      const value = Number(input.value);
      // Send only what changed, so a refusal names the field the user actually touched.
      if (!this.config || value !== this.config[name]) changes[name] = value;
    }
    if (!Object.keys(changes).length) {
      this.message("Nothing to change.");
      return;
    }
    await this.send(changes);
  }

  async togglePause() {
    this.clearErrors();
    const paused = this.pause.getAttribute("aria-pressed") !== "true";
    await this.send({ paused });
  }

  async send(changes) {
    let result;
    try {
      result = await patchConfig(changes, token.get());
    } catch (error) {
      this.showError(null, `The control-plane did not answer: ${error.message}`);
      return;
    }
    if (result.status === 401) {
      token.clear(); // refused: never send it again
      this.pending = changes;
      this.message("");
      const why = result.body.reason === "wrong" ? "The control-plane refused that token." : "Changes need a token.";
      this.prompt.ask(`${why} Enter this control-plane's token to apply: ${describe(changes)}.`, true);
      return;
    }
    this.pending = null;
    if (!result.ok) {
      this.showError(result.body.field, result.body.error || "refused");
      return;
    }
    const config = result.body.config;
    for (const name of FIELDS) {
      this.form.elements[name].value = String(config[name]); // what the server now has, edits included
      this.shown[name] = this.form.elements[name].value;
    }
    this.update(config);
    this.message(`Applied: ${describe(changes)}.`);
    this.onApplied(config);
  }

  showError(field, text) {
    const known = field === "paused" || FIELDS.includes(field);
    const slot = document.getElementById(known ? `${field}-error` : "form-error");
    slot.textContent = text;
    const input = FIELDS.includes(field) ? this.form.elements[field] : null;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    this.message("");
  }

  clearErrors() {
    for (const slot of document.querySelectorAll(".error")) slot.textContent = "";
    for (const name of FIELDS) this.form.elements[name].removeAttribute("aria-invalid");
  }

  message(text) {
    document.getElementById("form-message").textContent = text;
  }
}
