#!/bin/bash
# Probe what this kernel can do for security groups on a Linux bridge (run as root; makes and removes
# namespaces sgp-a, sgp-b, sgp-h). Prints one line per capability.
set -u
H=sgp-h; A=sgp-a; B=sgp-b
cleanup() { for n in $A $B $H; do ip netns del $n 2>/dev/null; done; }
cleanup; trap cleanup EXIT
ip netns add $H; ip netns add $A; ip netns add $B
ip -n $H link add br0 type bridge; ip -n $H link set br0 up
for g in a b; do
  ip -n $H link add t$g type veth peer name eth0 netns sgp-$g
  ip -n $H link set t$g master br0 up
done
ip -n $A addr add 10.77.0.1/24 dev eth0; ip -n $A link set eth0 up; ip -n $A link set lo up
ip -n $B addr add 10.77.0.2/24 dev eth0; ip -n $B link set eth0 up; ip -n $B link set lo up
ip netns exec $H sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null
echo "bridge-nf-call-iptables in a new netns: $(ip netns exec $H cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>&1)"
echo -n "nft bridge family + ct state: "
printf 'table bridge p {\n chain f {\n type filter hook forward priority 0\n ct state established accept\n }\n}\n' \
  | ip netns exec $H nft -f - 2>&1 | head -1 | tr -d '\n'; echo " (rc=${PIPESTATUS[1]})"
ip netns exec $H nft delete table bridge p 2>/dev/null
echo -n "nft bridge family iifname/oifname: "
printf 'table bridge p {\n chain f {\n type filter hook forward priority -200\n iifname "ta" meta mark set 0x10000\n oifname "tb" meta mark set meta mark | 0x2\n }\n}\n' \
  | ip netns exec $H nft -f - && echo ok
echo -n "nft inet forward sees the bridge mark + ct state (br_netfilter): "
printf 'table inet q {\n chain f {\n type filter hook forward priority 0\n ct state established,related counter accept\n meta mark 0x10002 tcp dport 5555 counter drop\n }\n}\n' \
  | ip netns exec $H nft -f - && echo loaded
ip netns exec $B timeout 4 python3 -c 'import socket,threading
def srv(p):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(("0.0.0.0",p)); s.listen(8)
    while True: s.accept()
for p in (5555,5556): threading.Thread(target=srv,args=(p,),daemon=True).start()
import time; time.sleep(4)' &
sleep 0.3
ip netns exec $A timeout 1 bash -c 'echo x >/dev/tcp/10.77.0.2/5555' 2>/dev/null && echo "  5555 (dropped by rule): CONNECTED (rule NOT effective)" || echo "  5555 (dropped by rule): blocked (rule effective)"
ip netns exec $A timeout 1 bash -c 'echo x >/dev/tcp/10.77.0.2/5556' 2>/dev/null && echo "  5556 (not matched): connected" || echo "  5556: blocked (unexpected)"
ip netns exec $H nft list table inet q | grep -E "counter" | sed 's/^/  /'
echo -n "ip6 via br_netfilter: "; ip netns exec $H cat /proc/sys/net/bridge/bridge-nf-call-ip6tables
echo -n "iptables physdev + conntrack: "
ip netns exec $H iptables -A FORWARD -m physdev --physdev-is-bridged --physdev-out tb -m conntrack --ctstate NEW -p tcp --dport 5557 -j DROP && echo ok
wait 2>/dev/null
