// Kiln dashboard: a hash-routed page over the JSON API (/api/...). Vanilla JS on purpose
// (see controlplane/src/web/mod.rs). All text goes into the DOM through textContent, never
// innerHTML. The session id is an HttpOnly cookie; this script only holds the CSRF token.
"use strict";

const S = { csrf: null, session: null, timer: null };
const LIFETIMES = ["10m", "1d", "7d", "30d", "90d", "365d"];
const STATES = ["pending_approval", "approved", "provisioning", "installed", "failed", "offline"];

// ------------------------------------------------------------------ DOM helpers

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function field(label, input, hint) {
  const id = input.id;
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input,
    hint ? h("small", { class: "hint", text: hint }) : null);
}

function msg(id) { return h("p", { id, class: "msg", role: "status", "aria-live": "polite" }); }

function say(box, text, ok) {
  box.textContent = text;
  box.className = "msg " + (ok ? "ok" : "err");
}

function table(cols, rows, empty) {
  if (!rows.length) return h("p", { class: "empty", text: empty });
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, cols.map(c => h("th", { scope: "col", text: c })))),
    h("tbody", {}, rows.map(r => h("tr", {}, r.map(c => h("td", {}, c)))))));
}

function when(t) {
  if (!t) return "—";
  const d = new Date(t);
  const secs = Math.round((Date.now() - d) / 1000);
  const ago = secs < 60 ? `${secs} s ago` : secs < 3600 ? `${Math.round(secs / 60)} min ago`
    : secs < 86400 ? `${Math.round(secs / 3600)} h ago` : `${Math.round(secs / 86400)} d ago`;
  return h("time", { datetime: t, title: d.toISOString() }, secs >= 0 ? ago : d.toLocaleString());
}

function badge(state) { return h("span", { class: "badge s-" + state, text: state.replace(/_/g, " ") }); }

function gib(b) { return (b / 2 ** 30).toFixed(b < 2 ** 31 ? 1 : 0) + " GiB"; }

function page(title, ...kids) {
  const v = document.getElementById("view");
  v.replaceChildren(h("h1", { text: title }), ...kids);
  document.title = title + " · Kiln";
}

function confirmBox(text, okLabel) {
  const d = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  d.returnValue = "";
  d.showModal();
  document.getElementById("confirm-cancel").focus();
  return new Promise(res => d.addEventListener("close", () => res(d.returnValue === "ok"), { once: true }));
}

// ------------------------------------------------------------------ API

class ApiError extends Error {}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  let r;
  try {
    r = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(`cannot reach the Kiln server (${e.message})`);
  }
  if (r.status === 204) return null;
  const text = await r.text();
  let j = null;
  try { j = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const m = (j && j.error) || text || r.statusText;
    if (r.status === 401 && path !== "/api/session") signInPage(m);
    throw new ApiError(m);
  }
  return j;
}

// Runs an action, putting its error (or success text) in a message box.
async function act(box, f, okText) {
  try {
    const r = await f();
    if (okText) say(box, typeof okText === "function" ? okText(r) : okText, true);
    return r;
  } catch (e) {
    say(box, e.message, false);
    return undefined;
  }
}

// ------------------------------------------------------------------ sign in

function signInPage(reason) {
  stopPolling();
  S.csrf = null;
  S.session = null;
  document.getElementById("top").hidden = true;
  const key = h("input", { id: "signin-key", type: "password", autocomplete: "current-password",
    required: true, placeholder: "kiln_…", spellcheck: "false" });
  const box = msg("signin-error");
  const form = h("form", { class: "card signin", onsubmit: async ev => {
    ev.preventDefault();
    try {
      const s = await api("POST", "/api/session", { api_key: key.value });
      key.value = "";
      signedIn(s);
    } catch (e) { say(box, e.message, false); }
  } },
  h("h1", { text: "Sign in to Kiln" }),
  field("API key", key, "An API key of your account (kilnctl account create, or the admin key kiln-server printed). It is exchanged for a session cookie and not kept by the page."),
  h("button", { type: "submit", id: "signin-btn", text: "Sign in" }), box);
  document.getElementById("view").replaceChildren(form);
  document.title = "Sign in · Kiln";
  if (reason) say(box, reason, false);
  key.focus();
}

function signedIn(s) {
  S.csrf = s.csrf_token;
  S.session = s;
  document.getElementById("top").hidden = false;
  document.getElementById("who").textContent = `${s.account_name} · ${s.key_name}${s.is_admin ? " (admin)" : ""}`;
  route();
}

async function signOut() {
  try { await api("DELETE", "/api/session"); } catch (_) { /* signed out anyway */ }
  location.hash = "#/machines";
  signInPage("Signed out.");
  say(document.getElementById("signin-error"), "Signed out.", true);
}

// ------------------------------------------------------------------ machines

function currentRunCell(m, runs) {
  const r = runs && runs[0];
  if (!r) return "—";
  if (r.status === "in_progress" || r.status === "queued") return h("span", { class: "pct" }, `${r.percent}%`);
  return badge(r.status);
}

async function machinesPage(query) {
  const filter = query.get("state") || "";
  const box = msg("approve-msg");
  const code = h("input", { id: "approve-code", autocomplete: "off", maxlength: 8, required: true,
    placeholder: "ABC123", class: "code" });
  const roles = h("input", { id: "approve-roles", placeholder: "web, db" });
  const approve = h("form", { class: "card inline", onsubmit: async ev => {
    ev.preventDefault();
    const list = roles.value.split(",").map(x => x.trim()).filter(Boolean);
    const m = await act(box, () => api("POST", "/api/machines/approve", { code: code.value.trim(), roles: list }),
      m => `Approved ${m.hostname || m.id}.`);
    if (m) { code.value = ""; renderMachines(); }
  } },
  h("h2", { text: "Approve a machine" }),
  h("p", { class: "hint", text: "A machine booted without a token shows a 6-character code on its console." }),
  h("div", { class: "row" }, field("Approval code", code), field("Roles (optional)", roles),
    h("button", { type: "submit", id: "approve-btn", text: "Approve" })), box);
  const sel = h("select", { id: "state-filter", onchange: () => {
    location.hash = sel.value ? `#/machines?state=${sel.value}` : "#/machines";
  } }, h("option", { value: "", text: "All states" }),
  STATES.map(s => h("option", { value: s, text: s.replace(/_/g, " "), selected: s === filter })));
  const list = h("div", { id: "machine-list" }, h("p", { class: "empty", text: "Loading…" }));
  page("Machines", approve, h("div", { class: "toolbar" }, field("Filter by state", sel)), list);
  async function renderMachines() {
    try {
      let ms = await api("GET", "/api/machines");
      if (filter) ms = ms.filter(m => m.state === filter);
      const runs = await Promise.all(ms.map(m => api("GET", `/api/machines/${m.id}/runs`).catch(() => [])));
      list.replaceChildren(table(["Name", "State", "Last seen", "Current run", "Roles"],
        ms.map((m, i) => [h("a", { href: `#/machines/${m.id}`, text: m.hostname || m.id }),
          badge(m.state), when(m.last_seen_at), currentRunCell(m, runs[i]), m.roles.join(", ") || "—"]),
        filter ? `No machine is ${filter.replace(/_/g, " ")}.`
          : "No machines yet. Boot one from the installer (see Installer) and approve its code above."));
    } catch (e) { list.replaceChildren(h("p", { class: "msg err", text: e.message })); }
  }
  await renderMachines();
  poll(renderMachines, 5000);
}

function inventoryCard(m) {
  const inv = m.inventory || {};
  return h("section", { class: "card" }, h("h2", { text: "Inventory" }),
    h("dl", { class: "facts" },
      h("dt", { text: "Firmware" }), h("dd", { text: inv.firmware || "unknown" }),
      h("dt", { text: "CPU" }), h("dd", { text: `${inv.cpu_model || inv.arch || "?"} · ${inv.cpu_cores || "?"} cores` }),
      h("dt", { text: "Memory" }), h("dd", { text: inv.memory_bytes ? gib(inv.memory_bytes) : "?" }),
      h("dt", { text: "System" }), h("dd", { text: [inv.system_vendor, inv.system_product, inv.system_serial].filter(Boolean).join(" · ") || "—" })),
    h("h3", { text: "Disks" }),
    table(["Name", "Size", "Model", "Serial", "Type"], (inv.disks || []).map(d =>
      [d.name, gib(d.size_bytes), d.model || "—", d.serial || "—", d.rotational ? "HDD" : "SSD"]), "No disks reported."),
    h("h3", { text: "Network interfaces" }),
    table(["Name", "MAC", "Speed"], (inv.nics || []).map(n =>
      [n.name, n.mac, n.speed_mbps ? `${n.speed_mbps} Mb/s` : "—"]), "No network interfaces reported."));
}

// The disk the agent will overwrite: without kiln.disk= hints it takes the smallest suitable.
function targetDisk(m) {
  const disks = [...((m.inventory || {}).disks || [])].sort((a, b) => a.size_bytes - b.size_bytes);
  return disks.length ? `${disks[0].name} (${gib(disks[0].size_bytes)}${disks[0].model ? ", " + disks[0].model : ""})` : "its target disk";
}

function settingsCard(m, allRoles, reload) {
  const box = msg("machine-msg");
  const kexec = h("input", { type: "checkbox", id: "kexec-switch", role: "switch", checked: m.kexec_installer,
    onchange: () => act(box, () => api("PATCH", `/api/provisioning/machines/${m.id}`, { kexec_installer: kexec.checked }),
      `kexec_installer ${kexec.checked ? "on" : "off"}.`) });
  const roleBoxes = allRoles.map(r => h("label", { class: "check" },
    h("input", { type: "checkbox", value: r.name, checked: m.roles.includes(r.name) }), r.name));
  const saveRoles = h("button", { type: "button", class: "secondary", id: "roles-save", text: "Save roles", onclick: () => {
    const names = roleBoxes.map(l => l.firstChild).filter(c => c.checked).map(c => c.value);
    act(box, () => api("PUT", `/api/machines/${m.id}/roles`, { roles: names }), "Roles saved.");
  } });
  const action = (kind, label) => h("button", { type: "button", class: "secondary", id: "action-" + kind, text: label,
    onclick: async () => {
      if (await confirmBox(`${label} ${m.hostname || m.id}?`, label))
        act(box, () => api("POST", `/api/machines/${m.id}/actions`, { action: kind }), `${label}: sent to the machine.`);
    } });
  const revoke = h("button", { type: "button", class: "danger", id: "revoke-cred", text: "Revoke credential",
    disabled: !m.has_credential, onclick: async () => {
      if (await confirmBox(`Revoke the credential of ${m.hostname || m.id}? Its agent is locked out until the machine registers again.`, "Revoke")) {
        await act(box, () => api("DELETE", `/api/machines/${m.id}/credential`), "Credential revoked.");
        reload();
      }
    } });
  return h("section", { class: "card" }, h("h2", { text: "Settings and actions" }),
    h("div", { class: "field" }, h("label", { class: "check", for: "kexec-switch" }, kexec,
      " kexec_installer (boot the installer by kexec on the next reboot, keeping the machine out of firmware)")),
    h("fieldset", {}, h("legend", { text: "Roles" }),
      roleBoxes.length ? roleBoxes : h("p", { class: "empty", text: "No roles defined yet (see Roles)." }), saveRoles),
    h("div", { class: "row" }, action("boot_installed_system", "Boot installed system"), action("reboot", "Reboot"), revoke),
    box);
}

// The filled part of a progress bar (set through CSSOM: the CSP forbids style attributes).
function fill(percent) {
  const e = h("span", {});
  e.style.width = `${percent}%`;
  return e;
}

function runsTable(runs) {
  return table(["Status", "Percent", "Current step", "Image", "Started", "Finished"], runs.map(r => [
    badge(r.status),
    h("span", { class: "bar", role: "progressbar", "aria-valuenow": r.percent, "aria-valuemin": 0, "aria-valuemax": 100 },
      fill(r.percent), h("b", { class: "run-percent", text: `${r.percent}%` })),
    h("span", { class: "run-step", text: r.current_step ? r.current_step.replace(/_/g, " ") : "—" }),
    r.image_name, when(r.started_at), r.finished_at ? when(r.finished_at) : (r.error ? r.error : "—")]),
  "No provisioning runs yet. Provision writes the image of the machine's role (or the default image) to its disk.");
}

async function eventLog(run) {
  const full = await api("GET", `/api/runs/${run.id}`);
  const ev = full.events || [];
  return h("section", { class: "card" }, h("h3", { text: `Event log of the latest run (${ev.length})` }),
    ev.length ? h("ol", { class: "log", id: "run-log" }, ev.map(e => h("li", {},
      h("time", { datetime: e.at, text: new Date(e.at).toLocaleTimeString() }), " ", describe(e.event))))
      : h("p", { class: "empty", text: "No events yet: the machine picks the run up at its next poll." }),
    run.error ? h("p", { class: "msg err", text: run.error }) : null);
}

function describe(e) {
  const step = e.step ? e.step.replace(/_/g, " ") : "";
  switch (e.type) {
    case "step_started": return `${step}: started`;
    case "progress": return `${step}: ${e.percent}%`;
    case "step_completed": return `${step}: done`;
    case "log": return e.message;
    case "completed": return "provisioning completed";
    case "failed": return `provisioning failed: ${e.error}`;
    default: return JSON.stringify(e);
  }
}

async function machinePage(id, tab) {
  const [m, allRoles] = await Promise.all([api("GET", `/api/machines/${id}`), api("GET", "/api/roles")]);
  const name = m.hostname || m.id;
  const tabs = h("nav", { class: "tabs", "aria-label": "Machine" },
    h("a", { href: `#/machines/${id}`, "aria-current": tab ? null : "page", text: "Overview" }),
    h("a", { href: `#/machines/${id}/provisions`, id: "tab-provisions", "aria-current": tab ? "page" : null, text: "Provisions" }));
  const head = h("p", { class: "sub" }, badge(m.state), ` last seen `, when(m.last_seen_at),
    ` · ${m.environment || "no heartbeat yet"} · id ${m.id}`);
  if (!tab) {
    page(name, head, tabs, h("div", { class: "grid" }, inventoryCard(m), settingsCard(m, allRoles, () => machinePage(id, tab))));
    return;
  }
  const box = msg("provision-msg");
  const runsBox = h("div", { id: "runs" });
  const logBox = h("div", {});
  const prov = h("button", { type: "button", id: "provision-btn", text: "Provision", onclick: async () => {
    const ok = await confirmBox(`Provision ${name}? This OVERWRITES ALL DATA on ${targetDisk(m)} with the image of its role (or the default image).`, "Overwrite and provision");
    if (!ok) return;
    const r = await act(box, () => api("POST", `/api/machines/${id}/provision`, { confirm_overwrite: true }),
      r => `Run started (${r.image_name}).`);
    if (r) refresh();
  } });
  page(name, head, tabs, h("div", { class: "row" }, prov), box, runsBox, logBox);
  async function refresh() {
    try {
      const runs = await api("GET", `/api/machines/${id}/runs`);
      runsBox.replaceChildren(runsTable(runs));
      logBox.replaceChildren(runs.length ? await eventLog(runs[0]) : "");
      const live = runs.length && !["completed", "failed"].includes(runs[0].status);
      prov.disabled = !!live;
      return live;
    } catch (e) { runsBox.replaceChildren(h("p", { class: "msg err", text: e.message })); return false; }
  }
  await refresh();
  poll(refresh, 2000);
}

// ------------------------------------------------------------------ images and credentials

async function imagesPage(query) {
  const filter = query.get("filter") || "all";
  const [images, creds] = await Promise.all([api("GET", `/api/images?filter=${filter}`), api("GET", "/api/registry-credentials")]);
  const credName = id => (creds.find(c => c.id === id) || {}).registry || (id ? "(deleted)" : "none");
  const box = msg("image-msg");
  const name = h("input", { id: "img-name", required: true, placeholder: "debian-12-web" });
  const oci = h("input", { id: "img-oci", required: true, placeholder: "registry.lan:5000/kiln/debian:12", spellcheck: "false" });
  const desc = h("input", { id: "img-desc" });
  const cred = h("select", { id: "img-cred" }, h("option", { value: "", text: "none (public registry)" }),
    creds.map(c => h("option", { value: c.id, text: c.registry })));
  let editing = null;
  const submit = h("button", { type: "submit", id: "img-create", text: "Create image" });
  const cancel = h("button", { type: "button", class: "secondary", hidden: true, text: "Cancel edit", onclick: () => imagesPage(query) });
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    const spec = { name: name.value.trim(), oci_url: oci.value.trim(), description: desc.value.trim() || null,
      registry_credential_id: cred.value || null };
    const r = await act(box, () => editing ? api("PUT", `/api/images/${editing}`, spec) : api("POST", "/api/images", spec),
      i => `Image ${i.name} saved.`);
    if (r) imagesPage(query).then(() => say(document.getElementById("image-msg"), `Image ${r.name} saved.`, true));
  } }, h("h2", { id: "img-form-title", text: "New custom image" }),
  h("div", { class: "row" }, field("Name", name), field("OCI URL", oci, "The reference as the machines see the registry."),
    field("Registry credential", cred), field("Description", desc)), h("div", { class: "row" }, submit, cancel), box);
  const edit = i => () => {
    editing = i.id;
    name.value = i.name; oci.value = i.oci_url || ""; desc.value = i.description || ""; cred.value = i.registry_credential_id || "";
    document.getElementById("img-form-title").textContent = `Edit ${i.name}`;
    submit.textContent = "Save image"; cancel.hidden = false; name.focus();
  };
  const del = i => async () => {
    if (await confirmBox(`Delete image ${i.name}?`, "Delete"))
      if (await act(box, () => api("DELETE", `/api/images/${i.id}`))) imagesPage(query);
  };
  const filters = h("nav", { class: "tabs", "aria-label": "Image filter" }, ["all", "official", "custom"].map(f =>
    h("a", { href: `#/images?filter=${f}`, id: `filter-${f}`, "aria-current": f === filter ? "page" : null, text: f[0].toUpperCase() + f.slice(1) })));
  page("Images", filters, table(["Name", "OCI URL", "Registry credential", "Description", ""], images.map(i => [
    h("span", {}, i.name, i.official ? h("span", { class: "badge official", text: "Official" }) : null),
    h("code", { text: i.oci_url || (i.raw_disk ? "raw disk" : "—") }), credName(i.registry_credential_id), i.description || "",
    i.official ? h("span", { class: "hint", text: "read-only" }) : h("span", { class: "row" },
      h("button", { type: "button", class: "secondary small", text: "Edit", "aria-label": `Edit ${i.name}`, onclick: edit(i) }),
      h("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete ${i.name}`, onclick: del(i) }))]),
  filter === "custom" ? "No custom images yet: create one below." : "No images."), form);
}

async function credentialsPage() {
  const creds = await api("GET", "/api/registry-credentials");
  const box = msg("cred-msg");
  const registry = h("input", { id: "cred-registry", required: true, placeholder: "registry.lan:5000", spellcheck: "false" });
  const user = h("input", { id: "cred-username", autocomplete: "off" });
  const pass = h("input", { id: "cred-password", type: "password", autocomplete: "new-password" });
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    const body = user.value ? { registry: registry.value.trim(), username: user.value, password: pass.value }
      : { registry: registry.value.trim(), token: pass.value };
    const r = await act(box, () => api("POST", "/api/registry-credentials", body));
    pass.value = "";
    if (r) credentialsPage().then(() => say(document.getElementById("cred-msg"), `Credential for ${r.registry} saved.`, true));
  } }, h("h2", { text: "New registry credential" }),
  h("p", { class: "hint", text: "The secret is sealed on the server and never shown again, here or in the API." }),
  h("div", { class: "row" }, field("Registry", registry), field("Username", user, "Empty for a bearer token."),
    field("Password or token", pass)), h("button", { type: "submit", id: "cred-create", text: "Save credential" }), box);
  page("Registry credentials", table(["Registry", "Kind", "Username", "Created", ""], creds.map(c => [
    c.registry, c.kind, c.username || "—", when(c.created_at),
    h("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete ${c.registry}`, onclick: async () => {
      if (await confirmBox(`Delete the credential for ${c.registry}?`, "Delete"))
        if (await act(box, () => api("DELETE", `/api/registry-credentials/${c.id}`)) !== undefined) credentialsPage();
    } })]), "No registry credentials. Public registries need none."), form);
}

// ------------------------------------------------------------------ roles, settings, tokens

async function rolesPage() {
  const [roles, images] = await Promise.all([api("GET", "/api/roles"), api("GET", "/api/images")]);
  const box = msg("role-error");
  const name = h("input", { id: "role-name", required: true, placeholder: "web" });
  const image = h("select", { id: "role-image" }, h("option", { value: "", text: "the default image" }),
    images.map(i => h("option", { value: i.name, text: i.name + (i.official ? " (official)" : "") })));
  const ud = h("textarea", { id: "role-userdata", rows: 8, spellcheck: "false", placeholder: "#cloud-config\nruncmd:\n  - echo hello" });
  let editing = null;
  const submit = h("button", { type: "submit", id: "role-create", text: "Create role" });
  const form = h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    const spec = { name: name.value.trim(), image: image.value || null, user_data: ud.value || null };
    const r = await act(box, () => editing ? api("PUT", `/api/roles/${editing}`, spec) : api("POST", "/api/roles", spec));
    if (r) rolesPage().then(() => say(document.getElementById("role-error"), `Role ${r.name} saved.`, true));
  } }, h("h2", { id: "role-form-title", text: "New role" }),
  h("div", { class: "row" }, field("Name", name), field("Image", image)),
  field("cloud-init user-data", ud, "Checked by the server when saved; errors appear below."), submit, box);
  const edit = r => () => {
    editing = r.id; name.value = r.name; image.value = r.image_name || ""; ud.value = r.user_data || "";
    document.getElementById("role-form-title").textContent = `Edit ${r.name}`; submit.textContent = "Save role"; ud.focus();
  };
  page("Roles", table(["Name", "Image", "cloud-init", ""], roles.map(r => [r.name, r.image_name || "default image",
    r.user_data ? `${r.user_data.split("\n").length} lines` : "—",
    h("span", { class: "row" },
      h("button", { type: "button", class: "secondary small", text: "Edit", "aria-label": `Edit ${r.name}`, onclick: edit(r) }),
      h("button", { type: "button", class: "danger small", text: "Delete", "aria-label": `Delete ${r.name}`, onclick: async () => {
        if (await confirmBox(`Delete role ${r.name}?`, "Delete"))
          if (await act(box, () => api("DELETE", `/api/roles/${r.id}`)) !== undefined) rolesPage();
      } }))]), "No roles yet. A role names an image and a cloud-init for machines that have it."), form);
}

async function settingsPage() {
  const [s, images] = await Promise.all([api("GET", "/api/account/settings"), api("GET", "/api/images")]);
  const box = msg("settings-msg");
  const sel = h("select", { id: "settings-image" }, h("option", { value: "", text: "none" }),
    images.map(i => h("option", { value: i.name, text: i.name + (i.official ? " (official)" : ""), selected: i.id === s.default_image_id })));
  page("Organization settings", h("form", { class: "card", onsubmit: async ev => {
    ev.preventDefault();
    await act(box, () => api("PUT", "/api/account/settings", { default_image: sel.value || null }),
      r => `Default image: ${r.default_image_name || "none"}.`);
  } }, h("p", {}, "Account ", h("strong", { text: s.account_name }), h("span", { class: "hint", text: ` (${s.account_id})` })),
  field("Default image", sel, "Used by machines whose roles name no image."),
  h("button", { type: "submit", id: "settings-save", text: "Save" }), box));
}

async function tokensPage() {
  const roles = await api("GET", "/api/roles");
  const box = msg("token-msg");
  const life = h("select", { id: "token-lifetime" }, LIFETIMES.map(l => h("option", { value: l, text: l })));
  const roleSel = h("select", { id: "token-roles", multiple: true, size: Math.min(4, Math.max(2, roles.length)) },
    roles.map(r => h("option", { value: r.name, text: r.name })));
  const out = h("div", { id: "token-out" });
  page("Bootstrap tokens", h("p", { class: "hint", text: "A machine that boots with a token (kiln.token= or install.sh) is approved at once. Tokens are not stored: copy it now." }),
    h("form", { class: "card", onsubmit: async ev => {
      ev.preventDefault();
      const names = [...roleSel.selectedOptions].map(o => o.value);
      const t = await act(box, () => api("POST", "/api/bootstrap-tokens", { lifetime: life.value, roles: names }));
      if (!t) return;
      const value = h("textarea", { id: "token-value", readonly: true, rows: 3, spellcheck: "false" });
      value.value = t.token;
      const copy = h("button", { type: "button", id: "token-copy", class: "secondary", text: "Copy", onclick: async () => {
        value.select();
        try { await navigator.clipboard.writeText(t.token); say(box, "Copied.", true); }
        catch (_) { say(box, document.execCommand("copy") ? "Copied." : "Select the text and copy it.", true); }
      } });
      out.replaceChildren(h("section", { class: "card shown-once" }, h("h2", { text: "Your token (shown once)" }),
        field("Token", value, `Expires ${new Date(t.expires_at).toLocaleString()}; roles: ${t.roles.join(", ") || "none"}.`), copy));
      say(box, `Token created (lifetime ${t.lifetime}).`, true);
    } }, h("div", { class: "row" }, field("Lifetime", life), roles.length ? field("Roles (optional)", roleSel) : null),
    h("button", { type: "submit", id: "token-create", text: "Create token" }), box), out);
}

// ------------------------------------------------------------------ installer

async function installerPage() {
  const [info, arts] = await Promise.all([api("GET", "/api/info"), api("GET", "/artifacts")]);
  const has = n => (arts.find(a => a.name === n) || {}).available;
  const life = h("select", { id: "iso-lifetime" }, LIFETIMES.map(l => h("option", { value: l, text: l, selected: l === "1d" })));
  const tokenIso = h("a", { class: "button", id: "iso-token", href: "/api/installer/iso?token_ttl=1d", download: "kiln-token.iso", text: "ISO with a baked token" });
  life.addEventListener("change", () => tokenIso.setAttribute("href", `/api/installer/iso?token_ttl=${life.value}`));
  const oneLiner = `curl -sfL --cacert ca.pem ${info.public_url}/install.sh | KILN_TOKEN=<token> bash -`;
  const line = h("input", { id: "install-line", readonly: true, value: oneLiner, spellcheck: "false" });
  page("Installer",
    h("section", { class: "card" }, h("h2", { text: "Boot media" }),
      h("p", { class: "hint", text: `Machines reach this server at ${info.public_url}; CA pin sha256:${info.ca_sha256}.` }),
      has("kiln.iso") === false ? h("p", { class: "msg err", text: "No ISO template on this server: build it with scripts/build-iso." }) : null,
      h("div", { class: "row" },
        h("a", { class: "button", id: "iso-plain", href: "/api/installer/iso", download: "kiln.iso", text: "ISO (approval by code)" }),
        field("Token lifetime", life), tokenIso),
      h("p", { class: "hint", text: "The baked token approves every machine that boots the ISO until it expires; keep the file private." }),
      h("div", { class: "row" },
        h("a", { class: "button secondary", id: "dl-vmlinuz", href: "/artifacts/vmlinuz", text: "vmlinuz" }),
        h("a", { class: "button secondary", id: "dl-ipxe", href: "/boot.ipxe", text: "iPXE script" }),
        h("a", { class: "button secondary", href: "/ca.pem", text: "CA certificate" }))),
    h("section", { class: "card" }, h("h2", { text: "Existing Linux machine" }),
      field("install.sh one-liner", line, "Download the CA certificate above as ca.pem (install.sh then checks its pin), create a token on the Tokens page and put it in place of <token>."),
      h("button", { type: "button", class: "secondary", text: "Copy", onclick: () => { line.select(); document.execCommand("copy"); } })),
    h("section", { class: "card" }, h("h2", { text: "Artifacts" }), table(["File", "Available", "Size"],
      arts.map(a => [h("a", { href: a.url, text: a.name }), a.available ? "yes" : (a.build_hint || "no"),
        a.size_bytes ? `${(a.size_bytes / 2 ** 20).toFixed(1)} MiB` : "—"]), "No artifacts.")));
}

// ------------------------------------------------------------------ routing

function stopPolling() { if (S.timer) { clearTimeout(S.timer); S.timer = null; } }

// Calls f every `ms` while the route stays the same; f may return false to stop.
function poll(f, ms) {
  const at = location.hash;
  const tick = async () => {
    if (location.hash !== at || !S.csrf) return;
    const more = await f();
    if (more !== false && location.hash === at) S.timer = setTimeout(tick, ms);
  };
  stopPolling();
  S.timer = setTimeout(tick, ms);
}

async function route() {
  stopPolling();
  if (!S.csrf) return;
  const [path, qs] = (location.hash.replace(/^#/, "") || "/machines").split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("#nav a"))
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${parts[0] || "machines"}`);
  const pages = { machines: () => parts[1] ? machinePage(parts[1], parts[2]) : machinesPage(query),
    images: () => imagesPage(query), credentials: credentialsPage, roles: rolesPage, settings: settingsPage,
    tokens: tokensPage, installer: installerPage };
  const f = pages[parts[0] || "machines"];
  try {
    if (!f) throw new ApiError(`No page ${path}. Pick one from the menu.`);
    await f();
    document.getElementById("view").dataset.page = parts[0] || "machines";
  } catch (e) {
    if (S.csrf) page("Something went wrong", h("p", { class: "msg err", id: "page-error", text: e.message }));
  }
}

async function start() {
  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  try { signedIn(await api("GET", "/api/session")); } catch (e) {
    signInPage(e.message === "not signed in" ? "" : e.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
