#!/usr/bin/env bash
# setup-localhost-hpc.sh -- idempotent, non-interactive "remote HPC on localhost" for aiida-lisei CI.
#
#   sshd on 127.0.0.1:$SSH_PORT (no systemd)  + client key, known_hosts and the ~/.ssh/config alias $SSH_ALIAS
#   munge + slurmdbd (accounting, so that `sacct` works) + slurmctld + slurmd: one node, no cgroups
#
# slurmdbd stores its accounting in the MariaDB server already answering on $DB_HOST:$DB_PORT (root, empty
# password by default); only if none answers, one is started here (its pid file lives under $BASE).
# AiiDA computers and codes are NOT registered here: the CLI and the tests (tests/integration) do that.
#
# Tested on Debian 12 (bookworm): Slurm 22.05.8, OpenSSH 9.2, munge 0.5.15, MariaDB 10.11; as root, in a
# container/VM without systemd and without a usable cgroup hierarchy.
#
# Usage:   bash scripts/hpc/setup-localhost-hpc.sh                 # phases: apt ssh slurm
#          PHASES="ssh slurm" bash scripts/hpc/setup-localhost-hpc.sh
#          bash scripts/hpc/teardown-localhost-hpc.sh              # stop what this started
# Re-running is safe and quick: daemons already running are left alone (restarted only if their config
# changed); keys, known_hosts entries and the ssh alias are created only if missing.
set -euo pipefail

BASE=${BASE:-/tmp/lisei-hpc}                   # everything we create (except ~/.ssh entries, /etc/slurm) lives here
PHASES=${PHASES:-"apt ssh slurm"}
SSH_PORT=${SSH_PORT:-2222}
SSH_ALIAS=${SSH_ALIAS:-slurm-localhost}        # Host alias written to ~/.ssh/config (used by core.ssh_async)
SSH_USER=${SSH_USER:-$(id -un)}
KEY=${KEY:-$HOME/.ssh/id_ed25519_aiida_ci}     # dedicated, passphrase-less client key
SSHD_DIR=$BASE/sshd
NODE=${NODE:-$(hostname -s)}                   # slurm NodeName / SlurmctldHost must equal `hostname -s`
NCPUS=${NCPUS:-$(nproc)}
PARTITION=${PARTITION:-debug}
CLUSTER=${CLUSTER:-localci}
DB_HOST=${DB_HOST:-127.0.0.1}                  # MariaDB for slurmdbd (TCP: "localhost" would mean the socket)
DB_PORT=${DB_PORT:-3306}
DB_ADMIN_USER=${DB_ADMIN_USER:-root}
DB_ADMIN_PASS=${DB_ADMIN_PASS:-}
DB_USER=${DB_USER:-slurm}
DB_PASS=${DB_PASS:-}                           # slurmdbd's database password: default the one in use, else random
DB_NAME=${DB_NAME:-slurm_acct_db}
MARIADB_DIR=$BASE/mariadb                      # only used when we have to start a MariaDB ourselves

T_START=$SECONDS
SLURMDBD_STARTED=0
log() { printf '\n=== [%(%H:%M:%S)T +%3ss] %s\n' -1 "$((SECONDS - T_START))" "$*"; }
die() { echo "ERROR: $*" >&2; exit 1; }
# pid_alive FILE [NAME]: the pid in FILE runs (and, if NAME is given, its /proc/PID/comm starts with NAME,
# so that a stale pid file whose pid was reused by another program does not count as "running")
pid_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(tr -dc '0-9' <"$1"); [[ -n $pid ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -z ${2:-} ]] || [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]]
}
stop_pidfile() {  # stop_pidfile FILE NAME: SIGTERM the pid in FILE and wait (<= 20 s) until it is gone
  local pid; pid_alive "$1" "$2" || return 0; pid=$(tr -dc '0-9' <"$1"); echo "stopping $2 (pid $pid)"; kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}
# install_if_changed NEW DEST: move NEW over DEST; return 0 if the content changed
install_if_changed() {
  if cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi
  mv "$1" "$2"; return 0
}
# the admin password goes through the environment (MYSQL_PWD), never on a command line that `ps` shows
db_admin() { MYSQL_PWD="$DB_ADMIN_PASS" mariadb -h "$DB_HOST" -P "$DB_PORT" -u "$DB_ADMIN_USER" "$@"; }

[[ $(id -u) == 0 ]] || die "run as root (needs apt, /etc/slurm, /run, munge/slurm users)"
# $BASE holds sshd's config and host keys: it must be ours, a real directory, writable by nobody else
# (in a shared /tmp another user could have created it first, or planted a link)
[[ ! -L $BASE ]] || die "$BASE is a symbolic link: remove it or set BASE to a directory of your own"
mkdir -p -m 755 "$BASE"
[[ $(stat -c %u "$BASE") == "$(id -u)" ]] || die "$BASE belongs to uid $(stat -c %u "$BASE"), not to us: remove it or set BASE"
chmod go-w "$BASE"
if [[ -z $DB_PASS ]]; then  # keep the password slurmdbd uses, else a random one (never a built-in default)
  DB_PASS=$(sed -n 's/^StoragePass=//p' /etc/slurm/slurmdbd.conf 2>/dev/null || true)
  [[ -n $DB_PASS ]] || DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
fi

# ----------------------------------------------------------------------------------------------------------------
phase_apt() {
  log "apt: openssh-server, munge, slurm-wlm, slurmdbd, mariadb-client"
  local pkgs=(openssh-server openssh-client munge slurm-wlm slurmdbd mariadb-client) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    # No systemd here; keep package postinsts from (trying to) start services, in particular sshd on :22.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "all packages already installed"
  fi
  echo "versions: $(dpkg-query -W -f='${Package}=${Version}\n' "${pkgs[@]}" | tr '\n' ' ')"
}

# ----------------------------------------------------------------------------------------------------------------
phase_ssh() {
  log "sshd on 127.0.0.1:$SSH_PORT + client key/known_hosts/ssh-config alias $SSH_ALIAS"
  mkdir -p "$SSHD_DIR" /run/sshd && chmod 755 /run/sshd   # privilege-separation dir: sshd refuses to start without
  [[ -f $SSHD_DIR/ssh_host_ed25519_key ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "aiida-ci-hostkey" -f "$SSHD_DIR/ssh_host_ed25519_key"
  cat >"$SSHD_DIR/sshd_config.new" <<EOF
# private sshd for aiida-lisei CI, started without systemd by scripts/hpc/setup-localhost-hpc.sh
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHD_DIR/ssh_host_ed25519_key
PidFile $SSHD_DIR/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# paramiko (core.ssh) and asyncssh (core.ssh_async) both need SFTP
Subsystem sftp internal-sftp
# AiiDA opens several channels/connections at once when many CalcJobs run
MaxSessions 50
MaxStartups 50:30:100
# Every AiiDA transport command is a new login; bash would read the account's ~/.bashrc on each (Debian's bash
# does for sshd sessions), and a pyenv-managed ~/.bashrc runs 'pyenv rehash' under a lock that waits 60 s when
# stale: seen in CI as every ssh hanging. With SHLVL=1 from sshd, bash counts itself nested and skips ~/.bashrc.
SetEnv SHLVL=1
LogLevel INFO
EOF
  /usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config.new"
  if install_if_changed "$SSHD_DIR/sshd_config.new" "$SSHD_DIR/sshd_config"; then
    stop_pidfile "$SSHD_DIR/sshd.pid" sshd
  fi
  if pid_alive "$SSHD_DIR/sshd.pid" sshd; then
    echo "sshd already running (pid $(cat "$SSHD_DIR/sshd.pid"))"
  else
    /usr/sbin/sshd -f "$SSHD_DIR/sshd_config" -E "$SSHD_DIR/sshd.log"   # forks into the background
    for _ in $(seq 25); do pid_alive "$SSHD_DIR/sshd.pid" sshd && break; sleep 0.2; done
    pid_alive "$SSHD_DIR/sshd.pid" sshd || { tail "$SSHD_DIR/sshd.log"; die "sshd did not start"; }
    echo "sshd started (pid $(cat "$SSHD_DIR/sshd.pid"))"
  fi

  # client side: key, authorized_keys, known_hosts, ~/.ssh/config alias (all idempotent)
  install -d -m 700 "$HOME/.ssh"
  [[ -f $KEY ]] || ssh-keygen -q -t ed25519 -N '' -C "aiida-ci@$(hostname -s)" -f "$KEY"
  touch "$HOME/.ssh/authorized_keys" "$HOME/.ssh/known_hosts"; chmod 600 "$HOME/.ssh/authorized_keys"
  grep -qxF "$(cat "$KEY.pub")" "$HOME/.ssh/authorized_keys" || cat "$KEY.pub" >>"$HOME/.ssh/authorized_keys"
  # known_hosts entries are written from the host key file itself (no ssh-keyscan race); stale ones replaced.
  # Non-default port => the entry must read "[localhost]:2222". Add 127.0.0.1 too.
  local hk h; hk=$(cut -d' ' -f1,2 "$SSHD_DIR/ssh_host_ed25519_key.pub")
  for h in "[localhost]:$SSH_PORT" "[127.0.0.1]:$SSH_PORT"; do
    if ! grep -qxF "$h $hk" "$HOME/.ssh/known_hosts"; then
      ssh-keygen -q -R "$h" -f "$HOME/.ssh/known_hosts" >/dev/null 2>&1 || true
      echo "$h $hk" >>"$HOME/.ssh/known_hosts"
    fi
  done
  rm -f "$HOME/.ssh/known_hosts.old"
  # ~/.ssh/config block between markers (rewritten on every run, at the top so that no earlier
  # "Host *" block overrides it: ssh uses the first value it finds for each option)
  touch "$HOME/.ssh/config"; chmod 600 "$HOME/.ssh/config"
  {
    cat <<EOF
# BEGIN aiida-ci $SSH_ALIAS
Host $SSH_ALIAS
    HostName localhost
    Port $SSH_PORT
    User $SSH_USER
    IdentityFile $KEY
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    BatchMode yes
# END aiida-ci $SSH_ALIAS
EOF
    sed "/^# BEGIN aiida-ci $SSH_ALIAS\$/,/^# END aiida-ci $SSH_ALIAS\$/d" "$HOME/.ssh/config"
  } >"$HOME/.ssh/config.new"
  chmod 600 "$HOME/.ssh/config.new"
  install_if_changed "$HOME/.ssh/config.new" "$HOME/.ssh/config" || true
  ssh -o ConnectTimeout=10 "$SSH_ALIAS" 'echo "ssh via alias OK: $(whoami)@$(hostname)"'
  ssh -o ConnectTimeout=10 -p "$SSH_PORT" -i "$KEY" -o BatchMode=yes "$SSH_USER@localhost" true &&
    echo "ssh -p $SSH_PORT $SSH_USER@localhost OK"
}

# ----------------------------------------------------------------------------------------------------------------
ensure_mariadb() {
  log "MariaDB for slurmdbd on $DB_HOST:$DB_PORT"
  if db_admin -e 'select 1' >/dev/null 2>&1; then
    echo "using the MariaDB server already answering on $DB_HOST:$DB_PORT ($(db_admin -N -e 'select version()'))"
    return 0
  fi
  echo "no MariaDB answers on $DB_HOST:$DB_PORT: starting one (pid file $MARIADB_DIR/mysqld.pid)"
  if ! dpkg-query -W -f='${Status}' mariadb-server 2>/dev/null | grep -q 'ok installed'; then
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends mariadb-server >/dev/null
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  fi
  # its own data directory under $BASE: never touch the datadir of a (stopped or differently configured)
  # system server; root@127.0.0.1 without password, as on the machines that already run one
  install -d -o mysql -g mysql -m 755 "$MARIADB_DIR"
  if [[ ! -d $MARIADB_DIR/data/mysql ]]; then
    mariadb-install-db --user=mysql --datadir="$MARIADB_DIR/data" --auth-root-authentication-method=normal \
      --skip-test-db >"$MARIADB_DIR/install-db.log" 2>&1 ||
      { tail "$MARIADB_DIR/install-db.log"; die "mariadb-install-db failed"; }
  fi
  if ! pid_alive "$MARIADB_DIR/mysqld.pid" mariadbd; then
    # no systemd: run mariadbd directly (it does not daemonize); TCP on $DB_HOST:$DB_PORT only
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$MARIADB_DIR/data" \
      --bind-address="$DB_HOST" --port="$DB_PORT" --socket="$MARIADB_DIR/mysqld.sock" \
      --pid-file="$MARIADB_DIR/mysqld.pid" --log-error="$MARIADB_DIR/error.log" \
      --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  fi
  for _ in $(seq 150); do db_admin -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  db_admin -e 'select 1' >/dev/null || { tail "$MARIADB_DIR/error.log"; die "mariadb did not start"; }
  echo "MariaDB started (pid $(cat "$MARIADB_DIR/mysqld.pid"))"
}

start_slurmdbd() {
  ensure_mariadb
  # slurmdbd connects over TCP from 127.0.0.1: the account must match that host (and 'localhost' for the socket)
  db_admin <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL
  log "slurmdbd (database $DB_NAME on $DB_HOST:$DB_PORT)"
  cat >/etc/slurm/slurmdbd.conf.new <<CONF
# written by scripts/hpc/setup-localhost-hpc.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=$DB_HOST
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
CONF
  local changed=0
  install_if_changed /etc/slurm/slurmdbd.conf.new /etc/slurm/slurmdbd.conf && changed=1
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 600 /etc/slurm/slurmdbd.conf   # slurmdbd insists on this
  if ((changed)); then stop_pidfile /run/slurmdbd.pid slurmdbd; fi
  if pid_alive /run/slurmdbd.pid slurmdbd; then
    echo "slurmdbd already running (pid $(cat /run/slurmdbd.pid))"
  else
    rm -f /run/slurmdbd.pid
    slurmdbd   # daemonizes
    SLURMDBD_STARTED=1
  fi
  for _ in $(seq 150); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -n list cluster >/dev/null || { tail /var/log/slurm/slurmdbd.log; die "slurmdbd not answering"; }
  # register the cluster before slurmctld starts
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  echo "slurmdbd OK (pid $(cat /run/slurmdbd.pid)), clusters: $(sacctmgr -n -P list cluster format=cluster | tr '\n' ' ')"
}

phase_slurm() {
  log "munge"
  getent hosts "$NODE" >/dev/null || { echo "127.0.0.1 $NODE" >>/etc/hosts; echo "added $NODE to /etc/hosts"; }
  install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then   # Debian's postinst normally creates it already
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  if pid_alive /run/munge/munged.pid munged; then
    echo "munged already running"
  else
    runuser -u munge -- /usr/sbin/munged --force   # --force: remove a stale socket/pid from a previous run
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge | grep -q 'STATUS: *Success' || die "munge round trip failed"
  echo "munge OK (pid $(cat /run/munge/munged.pid))"

  log "slurm.conf (cluster $CLUSTER, node $NODE, $NCPUS CPUs)"
  local mem; mem=$(($(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 9 / 10))
  install -d -o slurm -g slurm -m 755 /var/lib/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
  cat >/etc/slurm/slurm.conf.new <<EOF
# single-node slurm for aiida-lisei CI (scripts/hpc/setup-localhost-hpc.sh), no systemd, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# -- container friendly: no cgroup plugins at all --
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# accounting through slurmdbd: AiiDA runs sacct after each job (get_detailed_job_info)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
# flat completion log as well (handy to check by hand that a job really went through slurm)
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# trust the CPUs/RealMemory below even if slurmd detects a different topology (VMs/containers)
SlurmdParameters=config_overrides
# keep finished jobs visible to squeue/scontrol for 5 min (AiiDA polls with squeue)
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPUS RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  local changed=0
  install_if_changed /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf && changed=1
  chmod 644 /etc/slurm/slurm.conf
  if ((changed)); then
    echo "slurm.conf changed: (re)starting slurmctld/slurmd"
    stop_pidfile /run/slurmd.pid slurmd; stop_pidfile /run/slurmctld.pid slurmctld
  fi
  start_slurmdbd

  log "slurmctld + slurmd"
  if ((SLURMDBD_STARTED)) && pid_alive /run/slurmctld.pid slurmctld; then
    echo "slurmdbd was (re)started: restarting slurmctld so that it registers with it again"
    stop_pidfile /run/slurmctld.pid slurmctld
  fi
  if pid_alive /run/slurmctld.pid slurmctld; then
    echo "slurmctld already running (pid $(cat /run/slurmctld.pid))"
  else
    rm -f /run/slurmctld.pid
    slurmctld   # daemonizes
  fi
  for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.5; done
  scontrol ping | grep -q 'is UP' || { tail -20 /var/log/slurm/slurmctld.log; die "slurmctld not up"; }
  if pid_alive /run/slurmd.pid slurmd; then
    echo "slurmd already running (pid $(cat /run/slurmd.pid))"
  else
    rm -f /run/slurmd.pid
    slurmd   # daemonizes
  fi
  local state=""
  for _ in $(seq 60); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
    [[ $state =~ ^(idle|mix|alloc) ]] && break
    if [[ $state == down* || $state == drain* ]]; then scontrol update NodeName="$NODE" State=RESUME || true; fi
    sleep 0.5
  done
  sinfo
  [[ $(sinfo -h -n "$NODE" -o %t) =~ ^(idle|mix|alloc) ]] || { tail -20 /var/log/slurm/slurmd.log; die "node $NODE not usable"; }

  log "slurm smoke test: sbatch + sacct"
  local out=$BASE/slurm-smoke-%j.out jid
  jid=$(sbatch --parsable -t 1 -o "$out" --wrap 'echo "sbatch OK on $(hostname) as job $SLURM_JOB_ID"')
  for _ in $(seq 120); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.25; done
  for _ in $(seq 40); do sacct -n -X -j "$jid" -o State 2>/dev/null | grep -q COMPLETED && break; sleep 0.25; done
  cat "${out//%j/$jid}" 2>/dev/null || true
  sacct -X -j "$jid" -o JobID,JobName,State,ExitCode,Elapsed,NodeList
  sacct -n -X -j "$jid" -o State | grep -q COMPLETED || die "smoke job $jid not COMPLETED in sacct"
  rm -f "${out//%j/$jid}"
}

for p in $PHASES; do "phase_$p"; done
log "done in $((SECONDS - T_START)) s: ssh $SSH_ALIAS (127.0.0.1:$SSH_PORT), slurm cluster $CLUSTER, partition $PARTITION"
