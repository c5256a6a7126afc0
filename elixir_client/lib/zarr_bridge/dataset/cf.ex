defmodule ZarrBridge.Dataset.CF do
  @moduledoc false
  # What reading and writing a dataset share: CF time units, dimension sizes
  # and the error helpers (ZarrBridge.Dataset reads, ZarrBridge.Dataset.Writer writes).

  alias ZarrBridge.Error

  # nanoseconds per CF time unit, and the NumPy unit of a timedelta
  @cf_units [
    {~w(days day d), 86_400_000_000_000, :D},
    {~w(hours hour hrs hr h), 3_600_000_000_000, :h},
    {~w(minutes minute mins min), 60_000_000_000, :m},
    {~w(seconds second secs sec s), 1_000_000_000, :s},
    {~w(milliseconds millisecond msecs msec ms), 1_000_000, :ms},
    {~w(microseconds microsecond usecs usec us), 1_000, :us},
    {~w(nanoseconds nanosecond nsecs nsec ns), 1, :ns}
  ]

  @doc false
  def dim_sizes(variables) do
    Enum.reduce_while(variables, {:ok, %{}}, fn var, {:ok, acc} ->
      var.dims
      |> Enum.zip(Tuple.to_list(var.shape))
      |> Enum.reduce_while({:ok, acc}, fn {dim, size}, {:ok, acc} ->
        case Map.fetch(acc, dim) do
          {:ok, ^size} -> {:cont, {:ok, acc}}
          :error -> {:cont, {:ok, Map.put(acc, dim, size)}}
          {:ok, other} -> {:halt, {:conflict, dim, other, size, var.name}}
        end
      end)
      |> case do
        {:ok, acc} ->
          {:cont, {:ok, acc}}

        {:conflict, dim, a, b, name} ->
          {:halt,
           invalid_metadata(
             "dimension #{inspect(dim)} has size #{a}, but variable #{inspect(name)} gives it #{b}",
             %{dimension: dim, variable: name}
           )}
      end
    end)
  end

  @since ~r/^\s*(\w+)\s+since\s+(-?\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?\s*(Z|UTC|[+-]\d{1,2}(?::?\d{2})?)?\s*$/

  # "hours since 2024-01-01 06:00:00" -> {ns per unit, reference in ns since 1970}
  @doc false
  def parse_since(units, name) do
    with [_, unit, y, mo, d | rest] <- Regex.run(@since, units),
         {:ok, per, _} <- cf_unit(unit, name),
         [h, mi, s, frac, zone] <- pad(rest, 5),
         {:ok, date} <- Date.new(int(y), int(mo), int(d)),
         {:ok, time} <- Time.new(int(h), int(mi), int(s)),
         {:ok, offset} <- zone_offset(zone) do
      {seconds, 0} = NaiveDateTime.new!(date, time) |> NaiveDateTime.to_gregorian_seconds()
      frac_ns = if frac == "", do: 0, else: int(String.pad_trailing(frac, 9, "0"))
      {:ok, per, (seconds - 62_167_219_200 - offset) * 1_000_000_000 + frac_ns}
    else
      {:error, %Error{}} = error ->
        error

      _ ->
        invalid_metadata(
          "variable #{inspect(name)}: cannot read the time units #{inspect(units)}",
          %{
            variable: name,
            units: units
          }
        )
    end
  end

  @doc false
  def cf_unit(unit, name) do
    word = String.downcase(String.trim(unit))

    case Enum.find(@cf_units, fn {words, _, _} -> word in words end) do
      {_, per, numpy} ->
        {:ok, per, numpy}

      nil ->
        invalid_metadata("variable #{inspect(name)}: unknown time unit #{inspect(unit)}", %{
          variable: name,
          units: unit
        })
    end
  end

  defp pad(list, n), do: list ++ List.duplicate("", n - length(list))
  defp int(""), do: 0
  defp int(s), do: String.to_integer(s)

  defp zone_offset(z) when z in ["", "Z", "UTC"], do: {:ok, 0}

  defp zone_offset(<<sign, rest::binary>>) do
    {h, m} =
      case String.split(rest, ":") do
        [h, m] ->
          {int(h), int(m)}

        [hm] when byte_size(hm) > 2 ->
          {int(binary_part(hm, 0, byte_size(hm) - 2)), int(binary_part(hm, byte_size(hm) - 2, 2))}

        [h] ->
          {int(h), 0}
      end

    {:ok, if(sign == ?-, do: -1, else: 1) * (h * 3600 + m * 60)}
  end

  # Maps fun over a list, stopping at the first error.
  @doc false
  def collect(list, fun) do
    list
    |> Enum.reduce_while({:ok, []}, fn x, {:ok, acc} ->
      case fun.(x) do
        {:ok, y} -> {:cont, {:ok, [y | acc]}}
        {:error, %Error{}} = error -> {:halt, error}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  @doc false
  def invalid_metadata(message, details),
    do: {:error, %Error{code: :invalid_metadata, message: message, details: details}}

  @doc false
  def invalid_params(message, details),
    do: {:error, %Error{code: :invalid_params, message: message, details: details}}
end
