%% The one_for_one supervisor corral_port_client_test puts a corral_port under.
-module(corral_port_client_test_sup).
-behaviour(supervisor).
-export([init/1]).

init(Child) ->
    {ok, {#{strategy => one_for_one, intensity => 3, period => 5}, [Child]}}.
