%% The Erlang side of tests/port/test_etf.py's cross-check against a real VM.
%%
%% Reads requests on standard input, one a line, and answers each with one line:
%%
%%   encode ExprHex OptionsHex  ->  hex of term_to_binary(Expr, Options)
%%   check BinaryHex ExprHex    ->  true|false, a space, hex of the decoded term as ~tp
%%
%% Expressions are Erlang source, hex-encoded UTF-8 so that any character survives the
%% latin-1 standard input of `erl -noshell`. Variables an expression binds (P = self())
%% stay bound for the lines after it. A request that fails answers `error` and the reason.
-module(etf_peer).
-export([main/0]).

main() ->
    loop(erl_eval:new_bindings()).

loop(Bindings) ->
    case io:get_line("") of
        eof ->
            ok;
        Line ->
            Words = string:lexemes(string:trim(Line), " "),
            {Reply, Next} =
                try
                    handle(Words, Bindings)
                catch
                    Class:Reason -> {["error ", hex(io_lib:format("~tp:~tp", [Class, Reason]))], Bindings}
                end,
            io:put_chars([Reply, $\n]),
            loop(Next)
    end.

handle(["encode", ExprHex, OptionsHex], Bindings) ->
    {Value, Next} = eval(ExprHex, Bindings),
    {Options, _} = eval(OptionsHex, Next),
    {hex(term_to_binary(Value, Options)), Next};
handle(["check", BinaryHex, ExprHex], Bindings) ->
    {Expected, Next} = eval(ExprHex, Bindings),
    Decoded = binary_to_term(binary:decode_hex(list_to_binary(BinaryHex))),
    {[atom_to_list(Decoded =:= Expected), " ", hex(io_lib:format("~tp", [Decoded]))], Next}.

eval(Hex, Bindings) ->
    Source = unicode:characters_to_list(binary:decode_hex(list_to_binary(Hex))),
    {ok, Tokens, _} = erl_scan:string(Source ++ "."),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Value, Next} = erl_eval:exprs(Exprs, Bindings),
    {Value, Next}.

hex(Binary) when is_binary(Binary) -> binary:encode_hex(Binary);
hex(Chars) -> binary:encode_hex(unicode:characters_to_binary(Chars)).
