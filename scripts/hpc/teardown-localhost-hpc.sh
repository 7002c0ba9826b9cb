#!/usr/bin/env bash
# teardown-localhost-hpc.sh -- stop what setup-localhost-hpc.sh started (by pid file, never by process name).
#
# The shared MariaDB server is left alone unless setup-localhost-hpc.sh had to start its own (pid file under
# $BASE/mariadb). PURGE=1 additionally removes the ~/.ssh additions, $BASE, the slurm state and logs, and the
# slurmdbd database and its MariaDB account.
set -uo pipefail
BASE=${BASE:-/tmp/lisei-hpc}
SSH_ALIAS=${SSH_ALIAS:-slurm-localhost}
SSH_PORT=${SSH_PORT:-2222}
KEY=${KEY:-$HOME/.ssh/id_ed25519_aiida_ci}
DB_HOST=${DB_HOST:-127.0.0.1}
DB_PORT=${DB_PORT:-3306}
DB_ADMIN_USER=${DB_ADMIN_USER:-root}
DB_ADMIN_PASS=${DB_ADMIN_PASS:-}
DB_USER=${DB_USER:-slurm}
DB_NAME=${DB_NAME:-slurm_acct_db}
PURGE=${PURGE:-0}

stop_pidfile() {  # stop_pidfile FILE NAME: SIGTERM the pid in FILE if it is NAME, wait up to 20 s, then SIGKILL
  local pid; [[ -s $1 ]] || return 0; pid=$(tr -dc '0-9' <"$1"); [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]] || { echo "$1: pid $pid is not $2, left alone"; return 0; }
  echo "stopping $2 (pid $pid)"; kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  echo "  ... SIGKILL $pid"; kill -9 "$pid" 2>/dev/null || true
}

if ((PURGE)) && command -v mariadb >/dev/null; then   # while the server (maybe ours) still runs
  echo "dropping database $DB_NAME and the $DB_USER accounts"
  mariadb -h "$DB_HOST" -P "$DB_PORT" -u "$DB_ADMIN_USER" ${DB_ADMIN_PASS:+-p"$DB_ADMIN_PASS"} -e \
    "DROP DATABASE IF EXISTS $DB_NAME; DROP USER IF EXISTS '$DB_USER'@'127.0.0.1'; DROP USER IF EXISTS '$DB_USER'@'localhost';" ||
    echo "  (could not reach MariaDB on $DB_HOST:$DB_PORT)"
fi
stop_pidfile /run/slurmd.pid slurmd
stop_pidfile /run/slurmctld.pid slurmctld
stop_pidfile /run/slurmdbd.pid slurmdbd
stop_pidfile "$BASE/mariadb/mysqld.pid" mariadbd   # only the one setup started itself
stop_pidfile /run/munge/munged.pid munged
stop_pidfile "$BASE/sshd/sshd.pid" sshd
# slurm leaves its pid files behind; a stale /run/slurmctld.pid makes `apt-get remove slurmctld` fail
for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
  if [[ -s $f ]] && ! kill -0 "$(tr -dc '0-9' <"$f")" 2>/dev/null; then rm -f "$f"; fi
done

if ((PURGE)); then
  echo "purging ssh client additions, $BASE, slurm state and logs"
  sed -i "/^# BEGIN aiida-ci $SSH_ALIAS\$/,/^# END aiida-ci $SSH_ALIAS\$/d" "$HOME/.ssh/config" 2>/dev/null
  if [[ -f $KEY.pub && -f $HOME/.ssh/authorized_keys ]]; then
    { grep -vxF "$(cat "$KEY.pub")" "$HOME/.ssh/authorized_keys" || true; } >"$HOME/.ssh/authorized_keys.tmp"
    mv "$HOME/.ssh/authorized_keys.tmp" "$HOME/.ssh/authorized_keys"; chmod 600 "$HOME/.ssh/authorized_keys"
  fi
  for h in "[localhost]:$SSH_PORT" "[127.0.0.1]:$SSH_PORT"; do
    ssh-keygen -q -R "$h" -f "$HOME/.ssh/known_hosts" >/dev/null 2>&1
  done
  rm -f "$KEY" "$KEY.pub" "$HOME/.ssh/known_hosts.old"
  rm -rf "$BASE"
  rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/* /var/log/slurm/*
  rm -f /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf
fi
echo "teardown done"
