# Helpers of /sbin/tiny-cloudinit (sourced; needs log()). Busybox-static has no adduser/chpasswd:
# accounts are edited in /etc/passwd, /etc/shadow and /etc/group directly.

home_of() { awk -F: -v u="$1" '$1 == u { print $6 }' /etc/passwd; }

add_key() {  # add_key USER KEY: append to ~USER/.ssh/authorized_keys once
    case "$2" in ssh-*|ecdsa-*|sk-*) ;; *) return 0 ;; esac
    h=$(home_of "$1"); [ -n "$h" ] || { log "no user $1 for ssh key"; return 0; }
    mkdir -p "$h/.ssh"; touch "$h/.ssh/authorized_keys"
    grep -qxF "$2" "$h/.ssh/authorized_keys" || printf '%s\n' "$2" >> "$h/.ssh/authorized_keys"
    chmod 700 "$h/.ssh"; chmod 600 "$h/.ssh/authorized_keys"; chown -R "$1:" "$h/.ssh"
    set -- "$1" $2; log "ssh key for $1: $2 ...${4:+ $4}"
}

add_user() {  # add_user NAME: key-only account ('*' password), own group, home in /home
    grep -q "^$1:" /etc/passwd && return 0
    id=$(awk -F: 'BEGIN { m = 999 } $3 > m && $3 < 60000 { m = $3 } END { print m + 1 }' /etc/passwd)
    echo "$1:x:$id:$id::/home/$1:/bin/sh" >> /etc/passwd
    grep -q "^$1:" /etc/group || echo "$1:x:$id:" >> /etc/group
    echo "$1:*:19000:0:99999:7:::" >> /etc/shadow
    mkdir -p "/home/$1"; chown "$id:$id" "/home/$1"; chmod 755 "/home/$1"
    log "user $1 created (uid $id)"
}

add_groups() {  # add_groups USER "g1, g2": create missing groups, add USER as a member
    for g in $(echo "$2" | tr ',' ' '); do
        grep -q "^$g:" /etc/group || echo "$g:x:$(awk -F: 'BEGIN { m = 999 } $3 > m && $3 < 60000 { m = $3 } END { print m + 1 }' /etc/group):" >> /etc/group
        awk -F: -v OFS=: -v g="$g" -v u="$1" '$1 == g { n = split($4, m, ","); f = 0
            for (i = 1; i <= n; i++) if (m[i] == u) f = 1
            if (!f) $4 = ($4 == "" ? u : $4 "," u) } { print }' /etc/group > /etc/group.new && mv /etc/group.new /etc/group
    done
    log "user $1 groups: $(id -Gn "$1" 2>/dev/null)"
}

set_password() {  # set_password USER PLAINTEXT
    grep -q "^$1:" /etc/shadow || return 0
    h=$(mkpasswd -m sha512 "$2") || return 0
    awk -F: -v OFS=: -v u="$1" -v h="$h" '$1 == u { $2 = h } { print }' /etc/shadow > /etc/shadow.new \
        && mv /etc/shadow.new /etc/shadow && chmod 600 /etc/shadow
    log "password set for $1"
}

set_hostname() {  # set_hostname NAME-OR-FQDN
    [ -n "$1" ] || return 0
    n=${1%%.*}; hostname "$n"; echo "$n" > /etc/hostname
    if [ "$n" = "$1" ]; then printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$n" > /etc/hosts
    else printf '127.0.0.1 localhost\n127.0.1.1 %s %s\n' "$1" "$n" > /etc/hosts; fi
    log "hostname $n"
}

# The #cloud-config subset, as "TYPE<TAB>arg1<TAB>arg2" lines: HOST name, USER name, KEY user key,
# PASS user password, GROUPS user "g1,g2", SUDO user rule, SHELL user path, RUN command.
# Keys: hostname, fqdn, password, ssh_authorized_keys, runcmd (strings or [argv] lists), users
# (default | name, ssh_authorized_keys, plain_text_passwd, groups, sudo, shell).
parse_cloud_config() {
    awk '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
    function unq(s) { s = trim(s); if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) s = substr(s, 2, length(s) - 2); return s }
    function shq(s) { gsub(/\047/, "\047\\\047\047", s); return "\047" s "\047" }
    function argv(s,  a, n, i, out) { s = substr(trim(s), 2); sub(/\][ \t]*$/, "", s); n = split(s, a, ",")
        for (i = 1; i <= n; i++) out = out (i > 1 ? " " : "") shq(unq(a[i])); return out }
    function emit(t, a, b) { print t "\t" a (b == "" ? "" : "\t" b) }
    function flush(  i, u) { if (!inuser) return; u = (uname == "" || uname == "default") ? "root" : uname
        if (u != "root") emit("USER", u)
        for (i = 0; i < nk; i++) emit("KEY", u, ukeys[i])
        if (upass != "") emit("PASS", u, upass)
        if (ugroups != "") emit("GROUPS", u, ugroups)
        if (usudo != "" && usudo != "false" && usudo != "False") emit("SUDO", u, usudo)
        if (ushell != "") emit("SHELL", u, ushell)
        inuser = 0; uname = ""; nk = 0; upass = ""; ugroups = ""; usudo = ""; ushell = ""; sub2 = "" }
    function kv(line) { k = line; sub(/:.*/, "", k); v = line; sub(/^[^:]*:[ \t]*/, "", v); k = trim(k) }
    /^[ \t]*#/ || /^[ \t]*$/ { next }
    {
        match($0, /^ */); n = RLENGTH; line = trim(substr($0, n + 1))
        if (n == 0 && line !~ /^- /) {
            flush(); kv(line); sect = k
            if (k == "hostname" || k == "fqdn") emit("HOST", unq(v))
            else if (k == "password") emit("PASS", "root", unq(v))
            next
        }
        if (sect == "ssh_authorized_keys" || sect == "ssh-authorized-keys") {
            if (line ~ /^- /) emit("KEY", "root", unq(substr(line, 3))); next }
        if (sect == "runcmd") {
            if (line ~ /^- *\[/) emit("RUN", argv(substr(line, 3)))
            else if (line ~ /^- /) emit("RUN", unq(substr(line, 3)))
            next }
        if (sect != "users") next
        if (line ~ /^- / && (!inuser || n <= uind)) {
            flush(); inuser = 1; uind = n; line = trim(substr(line, 3))
            if (line !~ /:/) { uname = unq(line); next }
        }
        if (line ~ /^- /) {
            item = unq(substr(line, 3))
            if (sub2 == "ssh_authorized_keys" || sub2 == "ssh-authorized-keys") ukeys[nk++] = item
            else if (sub2 == "groups") ugroups = ugroups (ugroups == "" ? "" : ",") item
            else if (sub2 == "sudo") usudo = item
            next
        }
        kv(line); sub2 = k; v = unq(v)
        if (k == "name") uname = v
        else if (k == "plain_text_passwd") upass = v
        else if (k == "groups" && v != "") { gsub(/[][ \t"\047]/, "", v); ugroups = v }
        else if (k == "sudo" && v ~ /^\[/) { sub(/^\[/, "", v); sub(/\][ \t]*$/, "", v); usudo = unq(v) }
        else if (k == "sudo" && v != "") usudo = v
        else if (k == "shell") ushell = v
    }
    END { flush() }'
}
