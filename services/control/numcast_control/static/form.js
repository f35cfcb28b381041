// The config form and the pause button: PATCH /api/config, and a refused change shown next to its field.
import { patchConfig } from "./api.js";

const FIELDS = ["rate_hz", "min", "max"];

export class ConfigForm {
  constructor(form, pauseButton, onApplied) {
    this.form = form;
    this.pause = pauseButton;
    this.onApplied = onApplied;
    this.config = null; // the server's config, as last seen
    this.shown = {}; // what this page last wrote into each input, so a user's edit is never overwritten
    for (const name of FIELDS) this.shown[name] = form.elements[name].value;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    pauseButton.addEventListener("click", () => this.togglePause());
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
      result = await patchConfig(changes);
    } catch (error) {
      this.showError(null, `The control-plane did not answer: ${error.message}`);
      return;
    }
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
    this.message(`Applied: ${Object.keys(changes).map((k) => `${k} = ${changes[k]}`).join(", ")}.`);
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
