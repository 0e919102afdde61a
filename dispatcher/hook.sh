# shellcheck shell=bash
# Claude Code hook client in bash: the fast twin of dispatcher/hook.py (``python -S -I hook.py``).
#
#   bash -p hook.sh <Event> <python>    payload on stdin; AQ_SESSION, AQ_TASK, AQ_REDIS_URL in the environment
#
# Written into the per-launch settings by dispatcher/agent/hook_settings.py. It XADDs one capped entry to the
# session's hook stream (keys.session_hooks) with the Python hook's fields: event, session, task, time, payload.
# The payload is stdin as it came (NUL bytes dropped, cut at PAYLOAD_CAP bytes on a character boundary): the
# reader, store/hook_log.py, parses, validates and cuts it (core/hook_payload.py), treating it as hostile.
# Why bash: a Python start alone costs ~40 ms, this whole call ~5 ms (docs/decisions.md, "Hook client").
#
# Never fails nor blocks the agent: exit status 0 always, nothing on stdout (Claude adds a UserPromptSubmit
# hook's stdout to the prompt), warnings on stderr, a read timeout on each reply and a watchdog on the whole
# call. Where bash cannot report it execs the Python hook, stdin still unread: bash older than 4.2, unix:// or
# rediss:// URLs, URL forms it does not parse (query strings, IPv6), no /dev/tcp or a connection refused.
# Hostile input: no eval, no data in a printf format; every value goes out as a length-prefixed bulk string.
# `bash -p` (see hook_settings) keeps BASH_ENV and exported functions of the agent's environment out.
#
# This first part must parse in any old bash (or sh): it only decides whether to hand over to Python.

event=${1:-Unknown}
python=${2:-}

# The Python hook beside this script, run as hook_settings runs it (stdlib only: -S -I skip site's work).
case $0 in
    */*) here=${0%/*} ;;
    *) here=. ;;
esac

fallback() {
    if [ -n "$python" ]; then
        exec "$python" -S -I "$here/hook.py" "$event"
    fi
    printf 'dispatcher hook %s: not reported: %s\n' "$event" "$1" >&2
    exit 0
}

if [ -z "${BASH_VERSINFO:-}" ] || [ "${BASH_VERSINFO[0]}" -lt 4 ] \
        || { [ "${BASH_VERSINFO[0]}" -eq 4 ] && [ "${BASH_VERSINFO[1]}" -lt 2 ]; }; then
    fallback "needs bash 4.2 or newer"
fi
shopt -s execfail  # a failed exec (Python gone) must not end the script with status 126/127
trap 'exit 0' TERM # the watchdog's signal
set +o posix       # POSIXLY_CORRECT in the environment would make a failed connect end the script
exec >/dev/null    # nothing on stdout, whatever happens below
unset TMOUT        # it would time out the stdin read below
LC_ALL=C           # lengths in bytes, byte-wise patterns, '.' in EPOCHREALTIME

# Kept equal to the Python side by tests/unit/test_hook_client.py.
KEY_PREFIX=aq:hooks:           # keys.session_hooks()
MAXLEN=1000                    # keys.HOOKS_MAXLEN
PAYLOAD_CAP=262144             # 4 × defaults.HOOK_MAX_PAYLOAD_BYTES: what the Python hook reads
REPLY_TIMEOUT_S=1              # defaults.HOOK_SOCKET_TIMEOUT_S
WATCHDOG_S=3                   # connect + stdin + replies: a SYN into a black hole has no other timeout

session=${AQ_SESSION:-}
url=${AQ_REDIS_URL:-}
if [[ -z $session || -z $url ]]; then
    printf 'dispatcher hook %s: AQ_SESSION/AQ_REDIS_URL not set, nothing reported\n' "$event" >&2
    exit 0
fi

# The URL, as hook._commands reads it (urllib.parse.urlsplit): redis://[user[:password]@]host[:port][/db].
url_re='^redis://([^/?#]*)(/[^?#]*)?$'
[[ $url =~ $url_re ]] || fallback "URL form left to Python"
netloc=${BASH_REMATCH[1]}
db=${BASH_REMATCH[2]}
userinfo=''
if [[ $netloc == *@* ]]; then
    userinfo=${netloc%@*}
    netloc=${netloc##*@}
fi
host=${netloc%%:*}
port=''
[[ $netloc == *:* ]] && port=${netloc#*:}
[[ $host == *[![:alnum:]._-]* || $port == *[![:digit:]]* || ${#port} -gt 5 ]] && fallback "URL form left to Python"
host=${host:-127.0.0.1}
port=${port:-6379}

# urllib.parse.unquote: %XX becomes byte XX, any other '%' stays.
unquote() {
    local rest=$1 out='' byte
    local re='^([^%]*)%([0-9A-Fa-f][0-9A-Fa-f])(.*)$'
    while [[ $rest =~ $re ]]; do
        printf -v byte '%b' "\\x${BASH_REMATCH[2]}"
        out+=${BASH_REMATCH[1]}$byte
        rest=${BASH_REMATCH[3]}
    done
    decoded=$out$rest
}

# The commands, as RESP arrays of bulk strings, into one buffer sent in one go.
request='' replies=0
resp() {
    local arg
    request+="*$#"$'\r\n'
    for arg in "$@"; do
        request+="\$${#arg}"$'\r\n'"$arg"$'\r\n'
    done
    replies=$((replies + 1))
}
if [[ $userinfo == *:?* ]]; then  # AUTH only with a password, as in hook._commands
    unquote "${userinfo#*:}"
    password=$decoded
    unquote "${userinfo%%:*}"
    if [[ -n $decoded ]]; then
        resp AUTH "$decoded" "$password"
    else
        resp AUTH "$password"
    fi
fi
db=${db#"${db%%[!/]*}"}
db=${db%"${db##*[!/]}"}
[[ -n $db && $db != 0 ]] && resp SELECT "$db"

# The watchdog: a connect into a black hole, or a stdin never closed, has no timeout of its own. It waits
# (builtin read, no process to exec) on a pipe only this script writes to: when the script ends, the pipe
# closes and the watchdog ends too, at once; if the pipe is still open after WATCHDOG_S, it ends the script.
# Its stderr is closed so that the agent, waiting for the hook's pipes to close, never waits for it.
exec {watchdog}> >(exec 2>/dev/null; IFS= read -r -t "$WATCHDOG_S" _; (($? > 128)) && kill -TERM $$)

if ! { exec {redis}<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    exec {watchdog}>&-  # Python is not to inherit the watchdog's pipe (nor be killed by it)
    fallback "cannot connect to $host:$port from bash"
fi

# Claude writes the payload and closes stdin; `read -N` keeps newlines and quotes, drops NUL bytes.
IFS= read -r -d '' -N "$PAYLOAD_CAP" payload
if (( ${#payload} >= PAYLOAD_CAP )); then
    # Cut on a character boundary: drop an incomplete UTF-8 sequence at the end.
    tail=${payload: -4}
    cont=0
    while (( cont < 3 )) && [[ ${tail:${#tail}-1-cont:1} == [$'\x80'-$'\xbf'] ]]; do
        cont=$((cont + 1))
    done
    lead=${tail:${#tail}-1-cont:1}
    need=0
    case $lead in
        [$'\xc0'-$'\xdf']) need=1 ;;
        [$'\xe0'-$'\xef']) need=2 ;;
        [$'\xf0'-$'\xf7']) need=3 ;;
    esac
    if (( cont < need )); then
        payload=${payload:0:${#payload}-1-cont}
    elif (( need == 0 && cont > 0 )); then
        payload=${payload:0:${#payload}-cont}
    fi
fi

now=${EPOCHREALTIME:-}
[[ -n $now ]] || printf -v now '%(%s)T' -1
resp XADD "$KEY_PREFIX$session" MAXLEN '~' "$MAXLEN" '*' \
    event "$event" session "$session" task "${AQ_TASK:-}" time "$now" payload "$payload"
# One write for the whole request: bash's printf writes line by line, and with Nagle on this socket every
# line after the first waits for Redis's delayed ACK (~40 ms). cat writes what it reads in one go; the
# here-string adds the request's final newline back.
command -p cat <<<"${request%$'\n'}" >&"$redis"

# One reply per command: +OK, -ERR …, or the new entry's id as a bulk string.
error=''
for ((i = 0; i < replies; i++)); do
    if ! IFS= read -r -t "$REPLY_TIMEOUT_S" -u "$redis" line; then
        error=${error:-"no reply from Redis in ${REPLY_TIMEOUT_S}s"}
        break
    fi
    line=${line%$'\r'}
    case $line in
        -*) error=${error:-"Redis error: ${line:1}"} ;;
        '$'[0-9]*) IFS= read -r -t "$REPLY_TIMEOUT_S" -u "$redis" line ;;
    esac
done
exec {redis}>&- {watchdog}>&-
[[ -n $error ]] && printf 'dispatcher hook %s: not reported: %s\n' "$event" "$error" >&2
exit 0
