%% Drives corral workers as Erlang ports, as an Erlang program would.
%% Run: erl -noshell -pa DIR -eval 'corral_port_peer:run(["PYTHON", "PYTHONPATH"])'
%% Prints one "ok NAME" line per check, or "FAIL NAME ..." and halts with status 1.
-module(corral_port_peer).
-export([run/1]).

run([Python, PythonPath]) ->
    Port = open_worker(Python, PythonPath),
    Ref = make_ref(),
    Msg = {predict, [1.0, 2.5], #{<<"k">> => 1}, undefined},
    port_command(Port, term_to_binary({call, Ref, Msg})),
    check(call_echo, recv(Port), {reply, Ref, Msg}),
    port_command(Port, term_to_binary({call, Ref, [raise, 'bad input']})),
    check(call_error, error_parts(recv(Port), Ref),
          {<<"ValueError">>, <<"bad input">>, <<"ValueError: bad input\n">>}),
    port_command(Port, term_to_binary(42)),
    check(plain_term, recv(Port), 42),
    Array = {ndarray, <<"<f4">>, {2}, <<0, 0, 128, 63, 0, 0, 0, 64>>},
    port_command(Port, term_to_binary([sum, Array])),
    check(ndarray_sum, recv(Port), 3.0),
    port_command(Port, term_to_binary(Array)),
    check(ndarray_bare, recv(Port), Array),
    port_command(Port, term_to_binary({Array, Array})),
    check(ndarray_pair, recv(Port), {Array, Array}),
    port_command(Port, term_to_binary([array, [2]])),
    check(ndarray_reply, recv(Port), {ndarray, <<"<f4">>, {2}, <<0, 0, 0, 0, 0, 0, 128, 63>>}),
    port_command(Port, term_to_binary({cast, hello})),
    port_command(Port, term_to_binary({call, Ref, [casts]})),
    check(cast, recv(Port), {reply, Ref, [hello]}),
    port_command(Port, term_to_binary([pid])),
    OsPid = recv(Port),
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    check(killed_exit_status, exit_status(Port), 128 + 9),
    Port2 = open_worker(Python, PythonPath),
    port_command(Port2, <<1, 2, 3>>),
    check(garbage_exit_status, exit_status(Port2), 3),
    Port3 = open_worker(Python, PythonPath),
    port_command(Port3, term_to_binary([exit, 7])),
    check(os_exit_status, exit_status(Port3), 7),
    Port4 = open_worker(Python, PythonPath),
    port_command(Port4, term_to_binary(stop)),
    check(stop_exit_status, exit_status(Port4), 0),
    io:format("done~n"),
    halt(0).

open_worker(Python, PythonPath) ->
    Cmd = Python ++ " -m corral.port --erlang port_handlers:Echo",
    open_port({spawn, Cmd},
              [{packet, 4}, binary, exit_status, {env, [{"PYTHONPATH", PythonPath}]}]).

recv(Port) ->
    receive
        {Port, {data, Bin}} -> binary_to_term(Bin);
        {Port, {exit_status, S}} -> {unexpected_exit, S}
    after 20000 -> timeout
    end.

%% {Type, Message, last line of Traceback} of an {error, Ref, {Type, Message, Traceback}}.
error_parts({error, Ref, {Type, Message, Traceback}}, Ref) ->
    Lines = binary:split(Traceback, <<"\n">>, [global, trim]),
    {Type, Message, <<(lists:last(Lines))/binary, "\n">>};
error_parts(Other, _Ref) -> Other.

exit_status(Port) ->
    receive
        {Port, {exit_status, S}} -> S;
        {Port, {data, _}} -> exit_status(Port)
    after 20000 -> timeout
    end.

check(Name, Got, Want) ->
    case Got =:= Want of
        true -> io:format("ok ~p~n", [Name]);
        false ->
            io:format("FAIL ~p got ~p want ~p~n", [Name, Got, Want]),
            halt(1)
    end.
