// The dashboard (see docs/dashboard.md).
document.getElementById("app").textContent = "Homelab";
