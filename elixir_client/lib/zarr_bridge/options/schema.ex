defmodule ZarrBridge.Options.Schema do
  @moduledoc false
  # A small NimbleOptions: an option set is a keyword list of
  #   name: {type, default, doc}
  # that drives validation (unknown options and wrong types raise
  # ArgumentError), defaults and the docs table, so that each option is
  # spelled once.
  #
  # Types: :pos_integer, :non_neg_integer, :timeout (non-negative integer or
  # :infinity), :boolean, :path (a non-empty string; a charlist becomes a
  # string), :dir (a :path, expanded), :name (a process name), :iodata,
  # :env ({name, value} string pairs, a nil value unsets), {:list, type},
  # {:in, [values]}. A nil default also accepts nil.

  @type type ::
          :pos_integer
          | :non_neg_integer
          | :timeout
          | :boolean
          | :string
          | :path
          | :dir
          | :name
          | :iodata
          | :env
          | {:list, type}
          | {:in, [term]}
  @type t :: [{atom, {type, term, String.t()}}]

  @doc """
  The options `opts` checked against `schema`, as a map with every option
  (the defaults filled in). `owner` names the caller in messages;
  `defaults` is `defaults(schema)`, when the caller computed it already.
  """
  @spec validate!(term, t, String.t(), map) :: map
  def validate!(opts, schema, owner, defaults \\ nil)

  # The common case, kept cheap for calls: nothing given.
  def validate!([], schema, _owner, defaults), do: defaults || defaults(schema)

  def validate!(opts, schema, owner, defaults) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}"
    end

    Enum.reduce(opts, defaults || defaults(schema), fn {key, value}, acc ->
      case List.keyfind(schema, key, 0) do
        {^key, {type, default, _doc}} ->
          Map.put(acc, key, cast!(key, type, default, value))

        nil ->
          raise ArgumentError,
                "unknown option #{inspect(key)} for #{owner}; known options: " <>
                  Enum.map_join(schema, ", ", &inspect(elem(&1, 0)))
      end
    end)
  end

  @doc "Every option of `schema` with its default (pass it to `validate!/4` to save the work)."
  @spec defaults(t) :: map
  def defaults(schema),
    do: Map.new(schema, fn {name, {_type, default, _doc}} -> {name, default} end)

  defp cast!(_key, _type, nil, nil), do: nil

  defp cast!(key, type, _default, value) do
    case cast(type, value) do
      {:ok, value} ->
        value

      :error ->
        raise ArgumentError,
              "invalid value for #{inspect(key)}: #{inspect(value)}; expected #{expected(type)}"
    end
  end

  defp cast(:pos_integer, n) when is_integer(n) and n > 0, do: {:ok, n}
  defp cast(:non_neg_integer, n) when is_integer(n) and n >= 0, do: {:ok, n}
  defp cast(:timeout, :infinity), do: {:ok, :infinity}
  defp cast(:timeout, n) when is_integer(n) and n >= 0, do: {:ok, n}
  defp cast(:boolean, flag) when is_boolean(flag), do: {:ok, flag}
  defp cast(:string, text) when is_binary(text), do: {:ok, text}
  defp cast(:iodata, data) when is_binary(data) or is_list(data), do: {:ok, data}

  defp cast(:path, path) do
    case text(path) do
      path when is_binary(path) and path != "" -> {:ok, path}
      _ -> :error
    end
  end

  defp cast(:dir, path) do
    with {:ok, path} <- cast(:path, path), do: {:ok, Path.expand(path)}
  end

  defp cast(:name, name) when is_atom(name), do: {:ok, name}

  defp cast(:name, name) when is_tuple(name) and elem(name, 0) in [:global, :via],
    do: {:ok, name}

  defp cast(:env, env) when is_list(env) do
    if Enum.all?(env, &env_pair?/1), do: {:ok, env}, else: :error
  end

  defp cast({:list, type}, list) when is_list(list) do
    Enum.reduce_while(list, {:ok, []}, fn item, {:ok, acc} ->
      case cast(type, item) do
        {:ok, item} -> {:cont, {:ok, [item | acc]}}
        :error -> {:halt, :error}
      end
    end)
    |> case do
      {:ok, items} -> {:ok, Enum.reverse(items)}
      :error -> :error
    end
  end

  defp cast({:in, values}, value), do: if(value in values, do: {:ok, value}, else: :error)
  defp cast(_type, _value), do: :error

  defp env_pair?({name, value}) when is_binary(name), do: is_binary(value) or is_nil(value)
  defp env_pair?(_other), do: false

  @doc "What a value of `type` must be, in words."
  @spec expected(type) :: String.t()
  def expected(:pos_integer), do: "a positive integer"
  def expected(:non_neg_integer), do: "a non-negative integer"
  def expected(:timeout), do: "a non-negative integer or :infinity"
  def expected(:boolean), do: "a boolean"
  def expected(:string), do: "a string"
  def expected(:iodata), do: "iodata"
  def expected(:path), do: "a path (a non-empty string)"
  def expected(:dir), do: "a directory (a non-empty string)"
  def expected(:name), do: "an atom, {:global, term} or {:via, module, term}"
  def expected(:env), do: "a list of {name, value} string pairs (a nil value unsets)"
  def expected({:list, type}), do: "a list of: " <> expected(type)
  def expected({:in, values}), do: "one of " <> Enum.map_join(values, ", ", &inspect/1)

  @doc "The docs list of `schema`, in Markdown."
  @spec docs(t) :: String.t()
  def docs(schema) do
    Enum.map_join(schema, "\n", fn {name, {type, default, doc}} ->
      default = if default in [nil, []], do: "", else: " Default: `#{inspect(default)}`."
      "  * `#{inspect(name)}` (#{expected(type)}) - #{doc}#{default}"
    end)
  end

  @doc "See `ZarrBridge.Options.text/1`."
  @spec text(term) :: term
  def text(list) when is_list(list) and list != [] do
    if Enum.all?(list, &is_integer/1) do
      case :unicode.characters_to_binary(list) do
        text when is_binary(text) -> text
        _invalid -> list
      end
    else
      list
    end
  end

  def text(other), do: other
end
