// The control page: live status by polling /api/status, changes through PATCH /api/config.
const form = document.getElementById("config-form");
const error = document.getElementById("form-error");

function cell(text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  return td;
}

async function refresh() {
  try {
    const status = await (await fetch("/api/status")).json();
    document.getElementById("seq").textContent = status.seq;
    const rows = status.outputs.map((o) => {
      const tr = document.createElement("tr");
      tr.append(cell(`${o.path} ${o.name}`), cell(o.connected ? "yes" : "no"), cell(o.sent), cell(o.queued), cell(o.dropped));
      return tr;
    });
    document.getElementById("outputs").replaceChildren(...rows);
  } catch (e) {
    error.textContent = `status unavailable: ${e}`;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const body = { rate_hz: Number(data.get("rate_hz")), min: Number(data.get("min")), max: Number(data.get("max")), paused: data.get("paused") === "on" };
  const response = await fetch("/api/config", { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const result = await response.json();
  error.textContent = response.ok ? "" : result.error;
});

refresh();
setInterval(refresh, 1000);
