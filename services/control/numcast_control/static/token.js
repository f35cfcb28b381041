// The control token: asked for in the page once, kept for this tab (sessionStorage), sent with every change.
const KEY = "numcast-control-token";
let kept = ""; // where the token lives when the browser refuses storage: this page only

export const token = {
  get() {
    try {
      return sessionStorage.getItem(KEY) || "";
    } catch {
      return kept;
    }
  },
  set(value) {
    kept = value;
    try {
      sessionStorage.setItem(KEY, value);
    } catch {
      // storage is off: the token lasts until the page is reloaded
    }
  },
  clear() {
    kept = "";
    try {
      sessionStorage.removeItem(KEY);
    } catch {
      // nothing stored
    }
  },
};

/** `numcast up` prints the page as /#token=…: keep that token, and take it out of the address bar and history. */
export function takeTokenFromAddress() {
  const match = /^#token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  token.set(decodeURIComponent(match[1]));
  history.replaceState(null, "", window.location.pathname + window.location.search);
}

/** The in-page form that asks for the token; `onToken()` runs once one is entered. */
export class TokenPrompt {
  constructor(form, onToken) {
    this.form = form;
    this.input = form.elements.token;
    this.why = form.querySelector("#token-why");
    this.error = form.querySelector("#token-error");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = this.input.value.trim();
      if (!value) {
        this.error.textContent = "Enter the token.";
        this.input.setAttribute("aria-invalid", "true");
        this.input.focus();
        return;
      }
      token.set(value);
      this.input.value = ""; // kept in sessionStorage only, not in the page
      this.hide();
      onToken();
    });
  }

  /** Show the form with `message`; `focus` when the user has just tried a change (not on a mere poll). */
  ask(message, focus) {
    this.why.textContent = message;
    this.error.textContent = "";
    this.input.removeAttribute("aria-invalid");
    this.form.hidden = false;
    if (focus) this.input.focus();
  }

  get shown() {
    return !this.form.hidden;
  }

  hide() {
    this.form.hidden = true;
    this.error.textContent = "";
    this.input.removeAttribute("aria-invalid");
  }
}
