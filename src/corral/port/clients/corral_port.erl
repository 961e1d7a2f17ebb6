%% corral_port: a gen_server that owns one corral worker, a Python handler run as
%% `python -m corral.port --erlang module:Handler` behind an Erlang port.
%%
%% Shipped inside the corral Python package; `python -m corral.port --clients-dir` prints
%% the directory that holds this file. Compile it with `erlc corral_port.erl` (or copy it
%% into your application's src/). docs/ports.md has the term mapping and a full example.
%%
%%   {ok, Pid} = corral_port:start_link("mymodels.ranker:Ranker",
%%                                      [{env, [{"PYTHONPATH", "/srv/models"}]}]),
%%   {ok, Scores} = corral_port:call(Pid, {rank, [1.0, 2.0]}),
%%   {error, {Type, Message, Traceback}} = corral_port:call(Pid, bad_request),
%%   ok = corral_port:cast(Pid, {feedback, 3}).
%%
%% Replies: `{ok, Result}`; `{error, {Type, Message, Traceback}}` (three binaries) when the
%% handler raised; `{error, timeout}` when no reply came within the timeout (a late reply
%% is dropped); `{error, {port_exited, Status}}` for the calls in flight when the worker
%% exits. The worker exiting for any reason (a crash, SIGKILL, the OOM killer, a failed
%% setup: status 2) stops the server with reason `{port_exited, Status}` (128 + N for
%% signal N), an exit signal its links and its supervisor see. Stopping the server sends
%% the worker `stop` (its `terminate()` runs), then kills it after `stop_timeout`.
%%
%% Options, a proplist or a map:
%%   {python, Path}          the interpreter, a path or a name on PATH ("python3")
%%   {env, [{Name, Value}]}  extra environment variables for the worker (strings)
%%   {cd, Dir}               the worker's working directory
%%   {timeout, Ms}           call/2's timeout, ms or infinity (5000)
%%   {stop_timeout, Ms}      how long a stopping worker gets before SIGKILL (5000)
%%   {max_frame_size, Bytes} the worker's --max-frame-size (its default: 64 MiB)
%%   {spin, Seconds}         the worker's --spin, seconds it polls before blocking (0)
%%   crash_on_error          the worker exits (status 1) when the handler raises
-module(corral_port).
-behaviour(gen_server).

-export([start_link/2, start_link/3, start/2, call/2, call/3, cast/2, stop/1, os_pid/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(state, {
    port :: port() | undefined,
    os_pid :: integer(),
    timeout :: timeout(),
    stop_timeout :: non_neg_integer(),
    pending = #{} :: #{reference() => {gen_server:from(), reference() | undefined}}
}).

-define(OPTIONS, [python, env, cd, timeout, stop_timeout, max_frame_size, spin,
                  crash_on_error]).

%% --- API -------------------------------------------------------------------------------

%% Start a worker for Handler ("module:Attr", a string or binary), linked to the caller.
start_link(Handler, Opts) ->
    gen_server:start_link(?MODULE, {Handler, Opts}, []).

%% The same, registered as Name ({local, N}, {global, N} or {via, M, N}).
start_link(Name, Handler, Opts) ->
    gen_server:start_link(Name, ?MODULE, {Handler, Opts}, []).

%% The same, not linked.
start(Handler, Opts) ->
    gen_server:start(?MODULE, {Handler, Opts}, []).

%% Call the handler's handle_call(Term) with the server's default timeout.
call(Server, Term) ->
    gen_server:call(Server, {call, Term, default}, infinity).

%% Call with a timeout in ms (or infinity); {error, timeout} once it has passed.
call(Server, Term, Timeout) ->
    gen_server:call(Server, {call, Term, Timeout}, infinity).

%% The handler's handle_cast(Term); no reply.
cast(Server, Term) ->
    gen_server:cast(Server, {cast, Term}).

%% Stop the worker gracefully (its terminate() runs) and the server with reason normal.
stop(Server) ->
    gen_server:stop(Server).

%% The worker's OS process id.
os_pid(Server) ->
    gen_server:call(Server, os_pid).

%% --- gen_server ------------------------------------------------------------------------

init({Handler, Opts}) ->
    process_flag(trap_exit, true),
    case {is_text(Handler), options(Opts)} of
        {false, _} -> {stop, {invalid_handler, "a \"module:Attr\" string", Handler}};
        {true, {ok, O}} -> open(Handler, O);
        {true, {error, Reason}} -> {stop, Reason}
    end.

handle_call({call, Term, Timeout0}, From, S = #state{port = Port, pending = Pending}) ->
    Timeout = case Timeout0 of default -> S#state.timeout; _ -> Timeout0 end,
    Ref = make_ref(),
    %% A closed port raises badarg; its exit_status message is on its way and stops us.
    catch port_command(Port, term_to_binary({call, Ref, Term})),
    Timer = case Timeout of
        infinity -> undefined;
        _ -> erlang:send_after(Timeout, self(), {call_timeout, Ref})
    end,
    {noreply, S#state{pending = Pending#{Ref => {From, Timer}}}};
handle_call(os_pid, _From, S) ->
    {reply, S#state.os_pid, S}.

handle_cast({cast, Term}, S = #state{port = Port}) ->
    catch port_command(Port, term_to_binary({cast, Term})),
    {noreply, S}.

handle_info({Port, {data, Bin}}, S = #state{port = Port}) ->
    case binary_to_term(Bin) of
        {reply, Ref, Result} when is_reference(Ref) -> {noreply, answer(Ref, {ok, Result}, S)};
        {error, Ref, Error} when is_reference(Ref) -> {noreply, answer(Ref, {error, Error}, S)};
        Other -> {stop, {unexpected_term_from_worker, Other}, S}
    end;
handle_info({call_timeout, Ref}, S = #state{pending = Pending}) ->
    case maps:take(Ref, Pending) of
        {{From, _Timer}, Rest} ->
            gen_server:reply(From, {error, timeout}),
            {noreply, S#state{pending = Rest}};
        error ->
            {noreply, S}
    end;
handle_info({Port, {exit_status, Status}}, S = #state{port = Port}) ->
    Reason = {port_exited, Status},
    {stop, Reason, fail_pending({error, Reason}, S#state{port = undefined})};
handle_info({'EXIT', Port, Reason}, S = #state{port = Port}) ->
    %% The port closed without an exit status (killed from Erlang): as good as exited.
    Closed = S#state{port = undefined},
    {stop, {port_closed, Reason}, fail_pending({error, {port_closed, Reason}}, Closed)};
handle_info({'EXIT', _From, Reason}, S) ->
    %% A linked process other than the parent ended (the parent's exit is gen_server's).
    {stop, Reason, S};
handle_info(_Ignored, S) ->
    {noreply, S}.

terminate(_Reason, #state{port = undefined}) ->
    ok;
terminate(_Reason, S = #state{port = Port, os_pid = OsPid}) ->
    catch port_command(Port, term_to_binary(stop)),
    receive
        {Port, {exit_status, _}} -> ok
    after S#state.stop_timeout ->
        os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
        receive {Port, {exit_status, _}} -> ok after 5000 -> ok end
    end,
    catch port_close(Port),
    ok.

%% --- internals -------------------------------------------------------------------------

open(Handler, O) ->
    case python(maps:get(python, O)) of
        false ->
            {stop, {invalid_option, python, "an executable on PATH or a path",
                    maps:get(python, O)}};
        Python ->
            Args = ["-m", "corral.port", "--erlang" | flags(O)] ++ [to_list(Handler)],
            PortOpts = [{packet, 4}, binary, exit_status, use_stdio, {args, Args},
                        {env, [{to_list(K), to_list(V)} || {K, V} <- maps:get(env, O)]}]
                ++ [{cd, to_list(maps:get(cd, O))} || maps:is_key(cd, O)],
            try open_port({spawn_executable, Python}, PortOpts) of
                Port ->
                    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                    {ok, #state{port = Port, os_pid = OsPid, timeout = maps:get(timeout, O),
                                stop_timeout = maps:get(stop_timeout, O)}}
            catch
                error:Why -> {stop, {open_port_failed, Python, Why}}
            end
    end.

answer(Ref, Reply, S = #state{pending = Pending}) ->
    case maps:take(Ref, Pending) of
        {{From, Timer}, Rest} ->
            cancel(Timer),
            gen_server:reply(From, Reply),
            S#state{pending = Rest};
        error ->
            S  % its caller had its {error, timeout} already
    end.

fail_pending(Reply, S = #state{pending = Pending}) ->
    maps:foreach(fun(_Ref, {From, Timer}) ->
                         cancel(Timer),
                         gen_server:reply(From, Reply)
                 end, Pending),
    S#state{pending = #{}}.

cancel(undefined) -> ok;
cancel(Timer) -> erlang:cancel_timer(Timer, [{async, true}, {info, false}]).

python(Name) ->
    Path = to_list(Name),
    case lists:member($/, Path) of
        true -> Path;
        false -> os:find_executable(Path)
    end.

flags(O) ->
    [F || {Key, Flag} <- [{max_frame_size, "--max-frame-size"}, {spin, "--spin"}],
          maps:is_key(Key, O),
          F <- [Flag, number_text(maps:get(Key, O))]]
        ++ ["--crash-on-error" || maps:get(crash_on_error, O)].

number_text(N) when is_integer(N) -> integer_to_list(N);
number_text(N) when is_float(N) -> float_to_list(N, [short]).

options(Opts) when is_map(Opts) -> options(maps:to_list(Opts));
options(Opts) when is_list(Opts) ->
    Pairs = proplists:unfold(Opts),
    Defaults = #{python => "python3", env => [], timeout => 5000, stop_timeout => 5000,
                 crash_on_error => false},
    check(Pairs, Defaults);
options(Opts) ->
    {error, {invalid_options, "a proplist or a map", Opts}}.

check([], O) ->
    {ok, O};
check([{Key, Value} | Rest], O) ->
    case valid(Key, Value) of
        true -> check(Rest, O#{Key => Value});
        unknown -> {error, {unknown_option, Key, ?OPTIONS}};
        Rule -> {error, {invalid_option, Key, Rule, Value}}
    end;
check([Other | _], _O) ->
    {error, {invalid_options, "a proplist or a map", Other}}.

valid(python, V) -> is_text(V) orelse "a non-empty string";
valid(env, V) ->
    (is_list(V) andalso lists:all(fun({K, X}) -> is_text(K) andalso is_text(X);
                                     (_) -> false
                                  end, V))
        orelse "a list of {Name, Value} strings";
valid(cd, V) -> is_text(V) orelse "a non-empty string";
valid(timeout, V) -> is_timeout(V) orelse "an integer >= 0 (ms) or infinity";
valid(stop_timeout, V) ->
    (is_integer(V) andalso V >= 0) orelse "an integer >= 0 (ms)";
valid(max_frame_size, V) -> (is_integer(V) andalso V >= 1) orelse "an integer >= 1 (bytes)";
valid(spin, V) -> (is_number(V) andalso V >= 0) orelse "a number >= 0 (seconds)";
valid(crash_on_error, V) -> is_boolean(V) orelse "a boolean";
valid(_, _) -> unknown.

is_timeout(infinity) -> true;
is_timeout(V) -> is_integer(V) andalso V >= 0.

is_text(V) when is_binary(V) -> V =/= <<>>;
is_text(V) when is_list(V) -> V =/= [] andalso io_lib:printable_unicode_list(V);
is_text(_) -> false.

to_list(V) when is_binary(V) -> unicode:characters_to_list(V);
to_list(V) when is_list(V) -> V.
