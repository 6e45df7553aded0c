// The VM console: noVNC (vendored, pinned) over the same-origin WebSocket /ui/console/ws with a one-time token.
import RFB from "./vendor/novnc-1.7.0/core/rfb.js";

const screen = document.getElementById("console-screen");
const status = document.getElementById("console-status");
const proto = location.protocol === "https:" ? "wss:" : "ws:";
const url = `${proto}//${location.host}/ui/console/ws?vm=${encodeURIComponent(screen.dataset.vm)}` +
  `&token=${encodeURIComponent(screen.dataset.token)}`;
const options = { wsProtocols: ["binary"] };
if (screen.dataset.password) { options.credentials = { password: screen.dataset.password }; }
const rfb = new RFB(screen, url, options);
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => { status.textContent = screen.dataset.connected; status.dataset.state = "Connected"; });
rfb.addEventListener("disconnect", () => { status.textContent = screen.dataset.disconnected; status.dataset.state = "Disconnected"; });
window.zsConsole = rfb;
document.getElementById("console-cad").addEventListener("click", () => rfb.sendCtrlAltDel());
document.getElementById("console-reconnect").addEventListener("click", () => { location.href = screen.dataset.reconnectUrl; });
document.getElementById("console-type").addEventListener("click", () => {
  const input = document.getElementById("console-paste");
  for (const ch of input.value) {
    const code = ch.codePointAt(0);
    const keysym = ch === "\n" ? 0xff0d : (code < 0x100 ? code : 0x01000000 + code);
    rfb.sendKey(keysym, null, true);
    rfb.sendKey(keysym, null, false);
  }
  input.value = "";
  rfb.focus();
});
