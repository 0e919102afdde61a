// One session's screen, refreshed every second (GET /api/screen/<name>; read-only).
"use strict";

const name = decodeURIComponent(location.pathname.split("/").pop());
document.getElementById("title").textContent = name;
document.title = `${name} — agent-queue`;

async function refresh() {
  const conn = document.getElementById("conn");
  try {
    const res = await fetch(`/api/screen/${encodeURIComponent(name)}?history=500`, { credentials: "same-origin" });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.status);
    const screen = document.getElementById("screen");
    const atBottom = screen.scrollTop + screen.clientHeight >= screen.scrollHeight - 4;
    screen.textContent = data.text;
    if (atBottom) screen.scrollTop = screen.scrollHeight;
    document.getElementById("attach").textContent = data.attach;
    conn.textContent = "live";
    conn.className = "conn ok";
  } catch (err) {
    conn.textContent = `error: ${err.message}`;
    conn.className = "conn wait";
  }
  setTimeout(refresh, 1000);
}
refresh();
