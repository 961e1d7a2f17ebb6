%% Drives a real corral worker through the shipped client, corral_port (a gen_server).
%% Run: erl -noshell -pa DIR -eval 'corral_port_client_test:run(["PYTHON", "PYTHONPATH"])'
%% Prints one "ok NAME" line per check, or "FAIL NAME ..." and halts with status 1.
-module(corral_port_client_test).
-export([run/1, start_child/2]).

run([Python, PythonPath]) ->
    process_flag(trap_exit, true),
    Opts = [{python, Python}, {env, [{"PYTHONPATH", PythonPath}]}],
    {ok, Pid} = corral_port:start_link("port_handlers:Echo", Opts),
    Msg = {predict, [1.0, 2.5], #{<<"k">> => 1}, undefined},
    check(call, corral_port:call(Pid, Msg), {ok, Msg}),
    ok = corral_port:cast(Pid, hello),
    check(cast, corral_port:call(Pid, [casts], 20000), {ok, [hello]}),
    check(call_error, error_parts(corral_port:call(Pid, [raise, 'bad input'])),
          {<<"ValueError">>, <<"bad input">>, <<"ValueError: bad input\n">>}),
    %% The handler sleeps past the timeout: {error, timeout}; its late reply is dropped.
    check(call_timeout, corral_port:call(Pid, [sleep, 0.3], 10), {error, timeout}),
    check(after_timeout, corral_port:call(Pid, 42, 20000), {ok, 42}),
    OsPid = corral_port:os_pid(Pid),
    os:cmd("kill -KILL " ++ integer_to_list(OsPid)),
    check(killed_exit_seen_by_link, exit_reason(Pid), {port_exited, 128 + 9}),
    {ok, Failing} = corral_port:start_link("port_handlers:FailingSetup", Opts),
    check(setup_failed_exit, exit_reason(Failing), {port_exited, 2}),
    check(bad_option, corral_port:start_link("port_handlers:Echo", [{timeout, -1} | Opts]),
          {error, {invalid_option, timeout, "an integer >= 0 (ms) or infinity", -1}}),
    receive {'EXIT', _, _} -> ok after 0 -> ok end,
    supervised(Opts),
    Spec = #{id => echo,
             start => {corral_port, start_link, [{local, echo}, "port_handlers:Echo", Opts]}},
    {ok, Sup} = supervisor:start_link(corral_port_client_test_sup, Spec),
    check(child_spec, corral_port:call(echo, 8, 20000), {ok, 8}),
    unlink(Sup),
    exit(Sup, shutdown),
    {ok, Stopped} = corral_port:start_link("port_handlers:Echo", Opts),
    StoppedOsPid = corral_port:os_pid(Stopped),
    check(stop, corral_port:stop(Stopped), ok),
    check(stopped_worker_gone, os:cmd("kill -0 " ++ integer_to_list(StoppedOsPid)) =/= "", true),
    io:format("done~n"),
    halt(0).

%% A supervisor restarts a corral_port whose worker was SIGKILLed; the restarted one serves.
supervised(Opts) ->
    Self = self(),
    Child = #{id => model, start => {?MODULE, start_child, [Self, Opts]}},
    {ok, Sup} = supervisor:start_link(corral_port_client_test_sup, Child),
    First = started(),
    Ref = monitor(process, First),
    os:cmd("kill -KILL " ++ integer_to_list(corral_port:os_pid(First))),
    check(supervised_exit, receive {'DOWN', Ref, process, First, R} -> R after 20000 -> timeout end,
          {port_exited, 137}),
    Second = started(),
    check(supervisor_restarted, corral_port:call(Second, 7, 20000), {ok, 7}),
    unlink(Sup),
    exit(Sup, shutdown),
    ok.

start_child(Test, Opts) ->
    {ok, Pid} = corral_port:start_link("port_handlers:Echo", Opts),
    Test ! {started, Pid},
    {ok, Pid}.

started() ->
    receive {started, Pid} -> Pid after 20000 -> timeout end.

error_parts({error, {Type, Message, Traceback}}) ->
    Lines = binary:split(Traceback, <<"\n">>, [global, trim]),
    {Type, Message, <<(lists:last(Lines))/binary, "\n">>};
error_parts(Other) -> Other.

exit_reason(Pid) ->
    receive {'EXIT', Pid, Reason} -> Reason after 20000 -> timeout end.

check(Name, Got, Want) ->
    case Got =:= Want of
        true -> io:format("ok ~p~n", [Name]);
        false ->
            io:format("FAIL ~p got ~p want ~p~n", [Name, Got, Want]),
            halt(1)
    end.
